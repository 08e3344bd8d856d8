"""``status.json``: what became of one run, written whatever happens.

running (its process is alive, or ended without a word: killed) | ok | failed (why) |
diverged (non-finite, or finite but blown up) | preempted (SIGTERM/SIGUSR1: checkpointed at
``epoch``/``step``, continue with ``trainer.resume=true``) | killed (recorded by the sweep
launcher when a job's process died of a signal).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

STATUSES = ("running", "ok", "failed", "diverged", "preempted", "killed")


def cluster_job() -> str | None:
    """The id of the scheduler job this process runs in (Slurm, with its array task; submitit's
    local executor), kept across a requeue; None outside one."""
    job, task = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job:
        return f"{job}_{task}" if task else job
    return os.environ.get("SUBMITIT_LOCAL_JOB_ID")


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


class RunStatus:
    """Writes ``<run_dir>/status.json`` at start (running, with the pid and host of the run) and at
    the end (ok/failed/diverged/preempted)."""

    def __init__(self, run_dir: Path, overrides: list[str] | None = None):
        self.path = run_dir / "status.json"
        self.t0 = time.perf_counter()
        self.record = {"status": "running", "reason": "", "start": _now(), "end": None, "wall_s": None,
                       "overrides": list(overrides or []), "pid": os.getpid(), "host": socket.gethostname()}
        if cluster_job():
            self.record["cluster_job"] = cluster_job()  # a requeued job (same id) resumes this run
        self._write()

    def finish(self, status: str, reason: str = "", **extra) -> None:
        """The outcome; ``extra``: more fields (a preempted run's ``epoch`` and ``step``)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.record.update(status=status, reason=reason, end=_now(), wall_s=round(time.perf_counter() - self.t0, 3),
                           **extra)
        self._write()

    def _write(self) -> None:
        # Under torchrun every rank runs the job in the same directory; rank 0 owns the record.
        if os.environ.get("RANK", "0") != "0":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"status.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.record, indent=2) + "\n")
        os.replace(tmp, self.path)


def read_status(run_dir: Path) -> dict | None:
    """``status.json`` of a run, or None when there is none (or it is unreadable)."""
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        return None


def mark_killed(run_dir: Path, reason: str, overrides: list[str] | None = None) -> bool:
    """Record a job whose process died without a word (left ``running``, or dead before it
    wrote anything: then with ``overrides``) as ``killed``; True if it was."""
    record = read_status(run_dir)
    if record is None and overrides is not None and Path(run_dir).is_dir():
        record = {"status": "running", "start": None, "overrides": list(overrides)}
    if not record or record.get("status") != "running":
        return False
    record.update(status="killed", reason=reason, end=_now())
    tmp = Path(run_dir) / f"status.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, Path(run_dir) / "status.json")
    return True
