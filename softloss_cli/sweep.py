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
from pathlib import Path

from hydra.experimental.callback import Callback

from softloss_cli.run_status import read_status

#: set by the callback so the CLI can exit non-zero when a job failed.
LAST_SWEEP: dict = {}


def summarize_sweep(sweep_dir: Path) -> dict:
    """Collect every job directory (one holding ``.hydra/overrides.yaml``) under ``sweep_dir``."""
    import yaml

    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=lambda p: _job_key(p.parent.parent.name)):
        run_dir = overrides_file.parent.parent
        status = read_status(run_dir) or {"status": "failed", "reason": "no status.json (the job never started)"}
        reason = status.get("reason", "")
        if status["status"] == "running":
            # The sweep is over, so the job's process ended without recording an outcome.
            reason = reason or "the job ended without recording an outcome (killed, or out of memory?)"
        jobs.append({
            "job": run_dir.name,
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
    return (0, int(name)) if name.isdigit() else (1, name)


class SweepSummary(Callback):
    """Writes ``<sweep dir>/sweep.json`` and prints the failed jobs when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize_sweep(sweep_dir)
        summary["overrides"] = list(config.hydra.overrides.task)
        (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
        failed = [j for j in summary["jobs"] if j["status"] != "ok"]
        LAST_SWEEP.clear()
        LAST_SWEEP.update(summary, failed=failed)
        ok = len(summary["jobs"]) - len(failed)
        print(f"sweep: {ok}/{len(summary['jobs'])} jobs ok; results in {sweep_dir} (softloss report {sweep_dir})")
        for job in failed:
            print(f"  job {job['job']} {job['status']}: {job['reason']}  [{' '.join(job['overrides'])}]")
