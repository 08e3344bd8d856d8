"""``softloss train``: check the group choices, warn about sweep jobs that cannot be
composed, settle the run or sweep directory (a unique name, the sweep's lock, an earlier
sweep refused, resumed or moved aside: ``runs/launch_dir.py``), then hand the arguments to
Hydra (``runs/job.py``)."""

from __future__ import annotations

import os
import sys

from softloss_cli.config.choices import check_choices


def main(args: list[str]) -> int:
    check_choices(args)
    # Hydra re-raises instead of printing its own trace; _run_guarded turns it into one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from softloss_cli.runs import job, sweep
    from softloss_cli.runs.launch_dir import prepare

    multirun = is_plain_multirun(args)
    if multirun:
        import warnings

        from softloss_cli.runs.sweep_plan import check_sweep_jobs

        for message in check_sweep_jobs([a for a in args if not a.startswith("-")]):
            warnings.warn(message, stacklevel=1)
    launch = prepare(args, multirun)
    sweep.LAST_SWEEP.clear()
    sweep.CURRENT_SWEEP.clear()
    saved = sys.argv
    sys.argv = ["softloss train", *launch.args]
    try:
        job.train()
    except BaseException as exc:
        # A launcher that raises (a joblib worker killed by the OS) skips Hydra's end-of-sweep
        # callback: record the jobs that ran before the error reaches the user.
        sweep.finish_interrupted_sweep(exc)
        raise
    finally:
        sys.argv = saved
        launch.close()
    return 1 if sweep.LAST_SWEEP.get("failed") else 0


def is_plain_multirun(args: list[str]) -> bool:
    """A sweep (``-m``, or an ``hparams_search`` preset) of the shipped configs (not
    ``--cfg``/``--info``/another config dir)."""
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    other = {"--cfg", "-c", "--info", "--help", "-h", "--hydra-help", "--config-dir", "-cd", "--config-path", "-cp",
             "--config-name", "-cn", "--resolve", "--package", "-p", "--run", "-r", "--shell-completion", "-sc"}
    search = any(a.lstrip("+").startswith(("hparams_search=", "hydra.mode=MULTIRUN")) for a in args)
    return bool(flags & {"-m", "--multirun"} or search) and not flags & other
