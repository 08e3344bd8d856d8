"""Preemption: SIGTERM or SIGUSR1 (what Slurm sends before it preempts or times out a job) asks
the training loop to save a checkpoint at the next step boundary and stop.

``PreemptionGuard`` installs the handlers for the span of a training run and restores the
previous ones after. A handler only sets a flag: the loop polls ``requested`` after each
optimizer step (a Python attribute read, no host sync), saves a mid-epoch checkpoint that
resumes exactly, and raises ``Preempted``. The run is then recorded as ``preempted`` and the
process exits with 128 + the signal's number (143 for SIGTERM), as a process killed by that
signal would. A handler that was installed before ours (submitit's requeue handler on its
preemption signal, SIGUSR2 by default) is kept in ``previous`` so the caller can run it once
the checkpoint is safe.
"""

from __future__ import annotations

import signal
import threading

from softloss_cli.errors import SoftlossError

#: signals that always mean "checkpoint and stop".
PREEMPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class Preempted(SoftlossError):
    """Training stopped on a preemption signal after saving a checkpoint; exit 128 + signum."""

    def __init__(self, message: str, signum: int, epoch: int, step: int, previous_handler=None):
        super().__init__(message)
        self.signum, self.epoch, self.step, self.previous_handler = signum, epoch, step, previous_handler
        self.exit_code = 128 + signum


class PreemptionGuard:
    """Context manager: while active, the preemption signals set ``signum`` instead of killing.

    Signals are handled only in the main thread (Python's rule); elsewhere the guard is inert.
    Besides ``PREEMPT_SIGNALS``, SIGUSR2 is handled when a Python handler already owns it
    (submitit's preemption signal), so that the checkpoint comes first.
    """

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        wanted = list(PREEMPT_SIGNALS)
        usr2 = getattr(signal, "SIGUSR2", None)
        if usr2 is not None and callable(signal.getsignal(usr2)):
            wanted.append(usr2)
        for signum in wanted:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def previous_handler(self):
        """The Python handler that owned the received signal before us (submitit's), or None."""
        handler = self.previous.get(self.signum)
        return handler if callable(handler) else None

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"
