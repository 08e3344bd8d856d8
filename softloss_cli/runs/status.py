"""``status.json``: what became of one run (ok | failed | diverged), written whatever happens."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

STATUSES = ("running", "ok", "failed", "diverged")


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


class RunStatus:
    """Writes ``<run_dir>/status.json`` at start (running) and at the end (ok/failed/diverged)."""

    def __init__(self, run_dir: Path, overrides: list[str] | None = None):
        self.path = run_dir / "status.json"
        self.t0 = time.perf_counter()
        self.record = {"status": "running", "reason": "", "start": _now(), "end": None, "wall_s": None,
                       "overrides": list(overrides or [])}
        self._write()

    def finish(self, status: str, reason: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.record.update(status=status, reason=reason, end=_now(), wall_s=round(time.perf_counter() - self.t0, 3))
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
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.exists() else None
