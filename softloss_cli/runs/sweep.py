"""After a Hydra multirun: ``sweep.json`` (each job's overrides, run directory and state)
and a summary listing every job. Runs in the launching process (a Hydra callback),
whatever the launcher: the jobs' own ``status.json`` files are the source of truth, so a
job run in another process (joblib, submitit) is summarised the same way.

A job's state: ``ok``, ``failed`` (why), ``diverged``, ``preempted`` (checkpointed; resume
the sweep), ``killed`` (its process died without recording an outcome: a signal, the
out-of-memory killer) or ``not run`` (planned but never started: the launcher stopped).
Re-running the sweep into its directory with ``trainer.resume=true`` runs again exactly
the jobs that are not ok (``runs/job.py``).

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

from softloss_cli.runs.ownership import ASIDE_NAME, pid_alive
from softloss_cli.runs.status import mark_killed, read_status

#: set by the callback so the CLI can exit non-zero when a job failed.
LAST_SWEEP: dict = {}
#: the multirun in progress (directory, overrides, start time), so that the CLI can still
#: write ``sweep.json`` when a launcher stops the sweep with an error (a joblib worker
#: killed by the OS raises in the launching process and Hydra skips ``on_multirun_end``).
CURRENT_SWEEP: dict = {}


#: the reason of a job whose process ended without recording an outcome.
KILLED_REASON = "the job's process ended without recording an outcome (killed by a signal, or out of memory)"


def summarize_sweep(sweep_dir: Path, planned: list[list[str]] | None = None, over: bool = False) -> dict:
    """Collect every job directory (one holding ``.hydra/overrides.yaml`` or ``status.json``)
    under ``sweep_dir``, leaving out runs moved aside (``.overwritten/``).

    Jobs may sit at any depth (``hydra.sweep.subdir=${loss}/${seed}``); a job is named by its
    path relative to the sweep. A job left ``running`` whose process is gone (every one, when
    the sweep is ``over``) is ``killed``.
    ``planned``: the override lists of the sweep's jobs in launch order (named ``0``, ``1``...):
    those without a directory are listed ``not run``. The directory holds one sweep only: an
    earlier one is refused, resumed as this one, or moved aside (``runs/launch_dir.py``).
    """
    import yaml

    found: dict[Path, Path] = {}
    for marker in ("status.json", ".hydra/overrides.yaml"):
        for hit in sweep_dir.rglob(marker):
            run_dir = hit.parent.parent if marker.startswith(".hydra") else hit.parent
            parts = run_dir.relative_to(sweep_dir).parts
            if run_dir != sweep_dir and ASIDE_NAME not in parts and ".hydra" not in parts:
                found.setdefault(run_dir, hit)
    names = {d: d.relative_to(sweep_dir).as_posix() for d in found}
    jobs = []
    for run_dir in sorted(found, key=lambda d: _job_key(names[d])):
        status = read_status(run_dir) or {"status": "failed", "reason": "no status.json (the job never started)"}
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else status.get("overrides")
        state, reason = status["status"], status.get("reason", "")
        if state == "running" and (over or not _alive(status)):
            state, reason = "killed", reason or KILLED_REASON
        jobs.append({
            "job": names[run_dir],
            "run_dir": str(run_dir),
            "overrides": overrides or [],
            "status": state,
            "reason": reason,
            "wall_s": status.get("wall_s"),
            "start": status.get("start"),
            "end": status.get("end"),
        })
    seen = {job["job"] for job in jobs}
    for number, overrides in enumerate(planned or []):
        if str(number) not in seen:
            jobs.append({"job": str(number), "run_dir": str(sweep_dir / str(number)), "overrides": list(overrides),
                         "status": "not run", "reason": "the sweep stopped before this job started",
                         "wall_s": None, "start": None, "end": None})
    jobs.sort(key=lambda j: _job_key(j["job"]))
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return {"sweep_dir": str(sweep_dir), "counts": counts, "jobs": jobs}


def _alive(status: dict) -> bool:
    """Whether the process a ``running`` status names may still run: checked on its own host;
    assumed (it cannot be seen from here) on another; not when the record names no process."""
    import socket

    if status.get("pid") is None:
        return False
    return pid_alive(status["pid"]) if status.get("host") == socket.gethostname() else True


def _job_key(name: str):
    parts = name.split("/")
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def finish_sweep(sweep_dir: Path, overrides: list[str], error: str | None = None,
                 planned: list[list[str]] | None = None) -> dict:
    """Write ``sweep.json`` and the sweep's HPARAMS columns (into each finished job's event
    folder: ``train.logger.write_sweep_hparams``), print every job with its state; return the
    summary. A job left ``running`` by a process that is gone is recorded ``killed`` in its own
    ``status.json`` too (the report then says so).

    ``error``: why the launcher stopped the sweep early (recorded as ``"stopped"``).
    """
    summary = summarize_sweep(sweep_dir, planned, over=True)
    for job in summary["jobs"]:
        if job["status"] == "killed":
            mark_killed(Path(job["run_dir"]), job["reason"])
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
    for job in summary["jobs"]:
        why = f": {job['reason']}" if job["status"] != "ok" else ""
        print(f"  job {job['job']} {job['status']}{why}  [{' '.join(job['overrides'])}]")
    return summary


class SweepSummary(Callback):
    """Writes ``<sweep dir>/sweep.json`` (and the sweep's HPARAMS columns) and prints the
    failed jobs when a multirun ends."""

    def on_multirun_start(self, config, **kwargs) -> None:
        CURRENT_SWEEP.clear()
        CURRENT_SWEEP.update(dir=Path(config.hydra.sweep.dir), overrides=list(config.hydra.overrides.task),
                             planned=_planned(config))

    def on_multirun_end(self, config, **kwargs) -> None:
        # The directory holds this sweep only (an earlier one was refused, resumed as this one or
        # moved aside: runs/launch_dir.py), so every job in it is this sweep's.
        sweep_dir = Path(config.hydra.sweep.dir)
        planned = CURRENT_SWEEP.get("planned") if CURRENT_SWEEP.get("dir") == sweep_dir else None
        CURRENT_SWEEP.clear()
        if sweep_dir.is_dir():
            finish_sweep(sweep_dir, list(config.hydra.overrides.task), planned=planned)


def _planned(config) -> list[list[str]] | None:
    """The jobs a basic sweep with the default job names will launch (for "not run")."""
    try:
        from softloss_cli.runs.sweep_plan import default_job_names, planned_jobs

        if not default_job_names(config):
            return None

        return planned_jobs(list(config.hydra.overrides.task), config)
    except Exception:  # noqa: BLE001 - the summary then lists the jobs that have directories
        return None


def finish_interrupted_sweep(error: BaseException) -> None:
    """After a launcher raised: still write ``sweep.json`` for the jobs that ran (called by the CLI)."""
    sweep = dict(CURRENT_SWEEP)
    CURRENT_SWEEP.clear()
    if sweep and sweep["dir"].is_dir() and summarize_sweep(sweep["dir"], planned=sweep.get("planned"))["jobs"]:
        from softloss_cli.runs.job import failure_reason

        finish_sweep(sweep["dir"], sweep["overrides"], error=failure_reason(error), planned=sweep.get("planned"))
