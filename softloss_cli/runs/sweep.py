"""After a Hydra multirun: ``sweep.json`` (each job's overrides, run directory and status)
and a summary of the jobs that failed. Runs in the launching process (a Hydra callback),
whatever the launcher: the jobs' own ``status.json`` files are the source of truth, so a
job run in another process (joblib, submitit) is summarised the same way.

``sweep.json``::

    {"sweep_dir": ..., "overrides": [the sweep's command-line overrides],
     "counts": {"ok": 3, "failed": 1, ...},
     "jobs": [{"job": "0", "run_dir": ..., "overrides": [...], "status": "ok",
               "reason": "", "wall_s": 12.3, "start": ..., "end": ...}, ...]}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from softloss_cli.runs.status import read_status

#: set by the callback so the CLI can exit non-zero when a job failed.
LAST_SWEEP: dict = {}
#: the multirun in progress (directory, overrides, start time), so that the CLI can still
#: write ``sweep.json`` when a launcher stops the sweep with an error (a joblib worker
#: killed by the OS raises in the launching process and Hydra skips ``on_multirun_end``).
CURRENT_SWEEP: dict = {}

#: seconds of clock slack when telling this sweep's jobs from a previous sweep's in the same directory.
_CLOCK_SLACK_S = 2.0


def summarize_sweep(sweep_dir: Path, since: float | None = None) -> dict:
    """Collect every job directory (one holding ``.hydra/overrides.yaml``) under ``sweep_dir``.

    Jobs may sit at any depth (``hydra.sweep.subdir=${loss}/${seed}``); a job is named by its
    path relative to the sweep. ``since`` (a ``time.time()``): only jobs whose Hydra files
    were written after it, so a sweep re-run into the same directory does not report the
    previous sweep's leftover jobs.
    """
    import yaml

    jobs = []
    files = [f for f in sweep_dir.rglob(".hydra/overrides.yaml") if f.parent.parent != sweep_dir]
    if since is not None:
        files = [f for f in files if f.stat().st_mtime >= since - _CLOCK_SLACK_S]
    names = {f: f.parent.parent.relative_to(sweep_dir).as_posix() for f in files}
    for overrides_file in sorted(files, key=lambda f: _job_key(names[f])):
        run_dir = overrides_file.parent.parent
        status = read_status(run_dir) or {"status": "failed", "reason": "no status.json (the job never started)"}
        reason = status.get("reason", "")
        if status["status"] == "running":
            # The sweep is over, so the job's process ended without recording an outcome.
            reason = reason or "the job ended without recording an outcome (killed, or out of memory?)"
        jobs.append({
            "job": names[overrides_file],
            "run_dir": str(run_dir),
            "overrides": yaml.safe_load(overrides_file.read_text()) or [],
            "status": status["status"],
            "reason": reason,
            "wall_s": status.get("wall_s"),
            "start": status.get("start"),
            "end": status.get("end"),
        })
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return {"sweep_dir": str(sweep_dir), "counts": counts, "jobs": jobs}


def _job_key(name: str):
    parts = name.split("/")
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def finish_sweep(sweep_dir: Path, overrides: list[str], since: float | None = None, error: str | None = None) -> dict:
    """Write ``sweep.json`` and the sweep's HPARAMS columns (into each finished job's event
    folder: ``train.logger.write_sweep_hparams``), print the failed jobs; return the summary.

    ``error``: why the launcher stopped the sweep early (recorded as ``"stopped"``).
    """
    summary = summarize_sweep(sweep_dir, since)
    summary["overrides"] = list(overrides)
    if error:
        summary["stopped"] = error
    (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok_dirs = [Path(j["run_dir"]) for j in summary["jobs"] if j["status"] == "ok"]
    if ok_dirs:
        from softloss_cli.train.logger import write_sweep_hparams

        write_sweep_hparams(sweep_dir, ok_dirs)
    failed = [j for j in summary["jobs"] if j["status"] != "ok"]
    LAST_SWEEP.clear()
    LAST_SWEEP.update(summary, failed=failed)
    ok = len(summary["jobs"]) - len(failed)
    print(f"sweep: {ok}/{len(summary['jobs'])} jobs ok; results in {sweep_dir} (softloss report {sweep_dir})")
    for job in failed:
        print(f"  job {job['job']} {job['status']}: {job['reason']}  [{' '.join(job['overrides'])}]")
    return summary


class SweepSummary(Callback):
    """Writes ``<sweep dir>/sweep.json`` (and the sweep's HPARAMS columns) and prints the
    failed jobs when a multirun ends."""

    def on_multirun_start(self, config, **kwargs) -> None:
        CURRENT_SWEEP.clear()
        CURRENT_SWEEP.update(dir=Path(config.hydra.sweep.dir), overrides=list(config.hydra.overrides.task),
                             since=time.time())

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        since = CURRENT_SWEEP.get("since") if CURRENT_SWEEP.get("dir") == sweep_dir else None
        CURRENT_SWEEP.clear()
        if sweep_dir.is_dir():
            finish_sweep(sweep_dir, list(config.hydra.overrides.task), since)


def finish_interrupted_sweep(error: BaseException) -> None:
    """After a launcher raised: still write ``sweep.json`` for the jobs that ran (called by the CLI)."""
    sweep = dict(CURRENT_SWEEP)
    CURRENT_SWEEP.clear()
    if sweep and sweep["dir"].is_dir() and summarize_sweep(sweep["dir"], sweep["since"])["jobs"]:
        from softloss_cli.runs.job import failure_reason

        finish_sweep(sweep["dir"], sweep["overrides"], sweep["since"], error=failure_reason(error))
