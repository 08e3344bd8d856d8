"""What a command shows on the terminal while it works, and the same lines in the job's log.

- ``say(text)``: one line to stdout, and to the ``softloss`` logger at INFO. In a training
  job Hydra's log config sends INFO to ``<run>/train.log`` only (the console handler shows
  WARNING and up), so ``train.log`` holds every line the terminal showed, once.
- ``step(what)``: a context for a slow step without a natural count (generating a dataset,
  writing a cache): ``what...`` while it runs (a spinner on a terminal), then
  ``what: done in 2.1s``. ``step(what, total=n)`` gives a bar on a terminal; the code calls
  ``advance(k)`` on the object it yields.
- Off a terminal (a pipe, a file, a CI log) everything is plain text, one line per event,
  never wrapped: a reader of a log or a ``grep`` sees whole lines.
- ``quiet()``: a context in which ``step`` prints nothing (tests, library use); so does
  ``SOFTLOSS_PROGRESS=none`` (what ``trainer.progress=none`` sets for the data steps).

No rich import until a spinner is drawn: the CLI's start-up stays light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

_log = logging.getLogger("softloss")
#: the environment variable that silences ``step`` (set by the trainer for ``trainer.progress=none``).
PROGRESS_ENV = "SOFTLOSS_PROGRESS"
_QUIET = [False]


def is_terminal(stream=None) -> bool:
    """True when ``stream`` (default stdout) is an interactive terminal."""
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def say(text: str) -> None:
    """Print ``text`` (unwrapped, flushed) and log it at INFO for ``train.log``."""
    print(text, flush=True)
    _log.info(text)


def log_only(text: str) -> None:
    """Log ``text`` at INFO (``train.log``) without printing it: for text already shown,
    such as a rich table rendered on the terminal."""
    _log.info(text)


def _silenced() -> bool:
    return _QUIET[0] or os.environ.get(PROGRESS_ENV, "").lower() == "none"


@contextlib.contextmanager
def quiet():
    """``step`` prints nothing inside this context."""
    before = _QUIET[0]
    _QUIET[0] = True
    try:
        yield
    finally:
        _QUIET[0] = before


class _Step:
    """The object ``step`` yields: ``advance(k)`` moves its bar (no-op off a terminal)."""

    def __init__(self, bar=None, task=None):
        self._bar, self._task = bar, task

    def advance(self, k: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, k)


@contextlib.contextmanager
def step(what: str, total: int | None = None):
    """Show that ``what`` is running and how long it took (see the module docstring)."""
    if _silenced():
        yield _Step()
        return
    t0 = time.perf_counter()
    bar = None
    if is_terminal():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = [SpinnerColumn(), TextColumn(what)]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        bar = Progress(*columns, TimeElapsedColumn(), transient=True)
        bar.start()
        handle = _Step(bar, bar.add_task(what, total=total))
    else:
        print(f"{what}...", flush=True)
        handle = _Step()
    try:
        yield handle
    finally:
        if bar is not None:
            bar.stop()
    say(f"{what}: done in {time.perf_counter() - t0:.1f}s")


def mirror_warnings() -> None:
    """Python warnings shown on stderr also go to the log (``train.log``), once each (idempotent)."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "_softloss", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        shown(message, category, filename, lineno, file, line)
        log_only(f"{category.__name__}: {message}")

    showwarning._softloss = True
    warnings.showwarning = showwarning


def console(**kwargs):
    """A rich ``Console`` for tables: the terminal's width on a terminal; off one (a pipe, a
    file) no width limit and no colour codes, so no line is wrapped (rich would wrap at 80
    columns) and a log or ``grep`` gets whole rows."""
    from rich.console import Console

    plain = {} if is_terminal() else {"width": 100_000, "no_color": True}
    return Console(**plain, **kwargs)
