"""The Hydra entry point of ``softloss train``: one job = one run directory.

A job first takes its directory (``runs/ownership.py``: a lock, and a refusal when the
directory holds another run unless ``trainer.resume``/``trainer.overwrite``), then runs
every check that can refuse it; only then does it write: ``.hydra/`` (softloss writes it
itself, ``hydra.output_subdir`` is null, so that a refused run changes no file) and
``status.json``, which every job that started keeps up to date whatever happens
(ok | failed | diverged | preempted). In a multirun a failing job is recorded and the
sweep goes on; in a single run the error reaches the CLI, which prints it as one line and
exits non-zero (128 + the signal for a preempted run).
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from softloss_cli.config.catalog import CONFIG_DIR
from softloss_cli.errors import DivergedError, SoftlossError, one_line
from softloss_cli.runs.ownership import claim_run_dir, move_aside
from softloss_cli.runs.preflight import check_config
from softloss_cli.runs.status import RunStatus
from softloss_cli.runs.sweep_plan import COMPOSE_ERROR_KEY, record_composition_failures

log = logging.getLogger("softloss")

# configs/hydra/launcher/{joblib,submitit_*}.yaml share their names with the plugins' own
# configs, so Hydra 1.3 validates them against the plugins' schemas (typos in their keys are
# caught) and warns that this matching is deprecated. Our files hold every key the plugins
# read, so they keep working where the matching is gone; the warning is noise for users.
warnings.filterwarnings("ignore", message=r"\s*'hydra/(launcher|sweeper)/\w+' is validated against ConfigStore schema")
# A job whose overrides cannot be composed runs as a recorded failure instead of stopping the
# sweep (sweep_plan.py). Installed on import: joblib's workers import this module to unpickle
# the task function before they compose their job.
record_composition_failures()


def failure_reason(exc: BaseException) -> str:
    """The one-line reason a job failed, as ``status.json`` and the sweep summary show it.

    A user error (``SoftlossError``) is its message; ``instantiate`` errors name the target
    and the cause (``invalid config (torch.optim.SGD): Invalid learning rate: -1.0``), not
    Hydra's generic first line; anything else is ``<ExceptionType>: <first line>``.
    """
    if isinstance(exc, SoftlossError):
        return one_line(exc)
    if isinstance(exc.__cause__, SoftlossError):  # raised inside instantiate(): our message says it all
        return one_line(exc.__cause__)
    if type(exc).__name__ == "InstantiationException" and exc.__cause__ is not None:
        target = re.search(r"target '([^']+)'", str(exc))
        where = f" ({target.group(1)})" if target else ""
        cause = exc.__cause__
        return f"invalid config{where}: {one_line(cause) if str(cause).strip() else type(cause).__name__}"
    return f"{type(exc).__name__}: {one_line(exc)}"


#: the error of a single (non-multirun) job, re-raised by ``train`` once Hydra has returned.
_SINGLE_RUN_ERROR: list[BaseException] = []


def train() -> None:
    """``softloss train``: Hydra's entry point (reads ``sys.argv``).

    A single run's error is raised here, after Hydra returns, rather than from inside the
    task: Hydra would first print "Error executing job with overrides: [...]" to stderr,
    and the CLI promises one line. A multirun records failures and never raises them.
    """
    _SINGLE_RUN_ERROR.clear()
    _task()
    if _SINGLE_RUN_ERROR:
        raise _SINGLE_RUN_ERROR.pop()


# An absolute path: found the same way from a clone and from an installed wheel.
@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _task(cfg: DictConfig):
    from softloss_cli.train.preemption import Preempted, PreemptionGuard

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 owns the directory
    t = cfg.trainer
    lock, plan, status = None, "resume" if t.get("resume") else "fresh", None

    def start() -> None:
        """The run may start: move an overwritten run aside, write .hydra/ and status.json."""
        nonlocal status
        if main_rank:
            if plan == "overwrite":
                moved = move_aside(run_dir)
                if moved:
                    why = "trainer.overwrite=true" if t.get("overwrite") else "starting anew (no checkpoint to resume)"
                    log.warning("%s: the earlier run in %s moved to %s", why, run_dir, moved)
            write_hydra_files(run_dir, cfg)
        status = RunStatus(run_dir, list(hc.overrides.task))

    def end(outcome: str, reason: str, error: BaseException, interrupted: bool = False, **extra) -> None:
        """A job that did not succeed: ``status.json``, ``train.log``, then (unless the user
        interrupted it) the error for the CLI (single run) or one printed line (sweep, which goes on).
        A sweep job refused before it started is recorded in its own directory (a fresh one, or
        one it was going to restart); a refused single run, or a refused resume, writes nothing."""
        if status is None and multirun and lock is not None and plan != "resume":
            start()
        if status is not None:
            status.finish(outcome, reason, **extra)
            log.info("%s: %s", outcome, reason)  # INFO is below the console's level: printed once, below
        if interrupted:
            return
        if multirun:
            print(f"job {hc.job.num} {outcome}: {reason}")
        else:
            _SINGLE_RUN_ERROR.append(error)

    try:
        if main_rank:
            lock, plan = claim_run_dir(run_dir, bool(t.get("resume")), bool(t.get("overwrite")), multirun)
        if plan == "done":
            return _already_done(cfg, run_dir, hc.job.num)
        if plan == "overwrite" and t.get("resume"):  # a sweep job re-run from scratch: nothing to resume
            with open_dict(cfg):
                cfg.trainer.resume = False
        if cfg.get(COMPOSE_ERROR_KEY):
            raise SoftlossError(str(cfg[COMPOSE_ERROR_KEY]))
        check_config(cfg)
        from softloss_cli.train.loop import fit

        with PreemptionGuard() as guard:
            metrics = fit(cfg, run_dir, on_start=start, guard=guard)
    except Preempted as exc:
        end("preempted", one_line(exc), exc, epoch=exc.epoch + 1, step=exc.step)
        if lock is not None:
            lock.release()
        if exc.previous_handler is not None:  # submitit's: requeue the job now that its checkpoint is safe
            exc.previous_handler(exc.signum, None)
        return None
    except DivergedError as exc:
        end("diverged", one_line(exc), exc)
        return None
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        end("failed", failure_reason(exc), exc, interrupted)
        if status is not None and main_rank:
            (run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
        if interrupted:
            raise
        return None
    finally:
        if lock is not None:
            lock.release()
    wanted = cfg.get("optimized_metric")
    if wanted and wanted not in metrics:
        # An hparams_search preset naming a metric this task does not report: every trial would
        # be lost, so say which names exist (a failed job in a sweep, an error in a single run).
        names = ", ".join(sorted(k for k in metrics if k.startswith("val/")))
        reason = f"optimized_metric={wanted} is not a metric of this run; validation metrics: {names}"
        end("failed", reason, SoftlossError(reason))
        return None
    status.finish("ok")
    from softloss_cli.runs.summary import print_run_summary

    task_file = run_dir / "task.json"
    record = json.loads(task_file.read_text()) if task_file.exists() else {}
    checkpoint = cfg.get("eval", {}).get("checkpoint", "best")
    if checkpoint == "best" and record.get("monitor"):  # the metric that chose it (trainer.monitor, resolved)
        checkpoint = f"best by {record['monitor']}"
    print_run_summary(metrics, run_dir, compact=multirun, checkpoint=checkpoint, kind=record.get("eval_kind"),
                      data=cfg.data.get("name"))
    # An Optuna sweeper reads this return value; a failed job returns None, which the sweeper
    # records as a failed trial and goes on.
    return metrics[wanted] if wanted else None


def write_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them (``hydra.output_subdir``
    is null in ``train.yaml``: softloss writes them once the directory is the run's own)."""
    import copy

    hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    with read_write(hydra_cfg.hydra), open_dict(hydra_cfg.hydra):
        hydra_cfg.hydra.output_subdir = ".hydra"  # where they are, as a reader of hydra.yaml expects
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


def _already_done(cfg: DictConfig, run_dir: Path, num) -> float | None:
    """A sweep re-run with ``trainer.resume=true``: this job ended ok before; it is left as it is."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"job {num} ok (finished in an earlier launch; left as it is) -> {run_dir}")
    wanted = cfg.get("optimized_metric")
    return metrics.get(wanted) if wanted else None
