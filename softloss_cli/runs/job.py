"""The Hydra entry point of ``softloss train``: one job = one run directory.

Every job writes ``status.json`` whatever happens. In a multirun a failing job is
recorded and the sweep goes on; in a single run the error reaches the CLI, which prints
it as one line and exits non-zero.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from softloss_cli.config.catalog import CONFIG_DIR
from softloss_cli.errors import DivergedError, SoftlossError, one_line
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
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    status = RunStatus(run_dir, list(hc.overrides.task))

    def end(outcome: str, reason: str, error: BaseException, interrupted: bool = False) -> None:
        """A job that did not succeed: ``status.json``, ``train.log``, then (unless the user
        interrupted it) the error for the CLI (single run) or one printed line (sweep, which goes on)."""
        status.finish(outcome, reason)
        log.info("%s: %s", outcome, reason)  # INFO is below the console's level: printed once, below
        if interrupted:
            return
        if multirun:
            print(f"job {hc.job.num} {outcome}: {reason}")
        else:
            _SINGLE_RUN_ERROR.append(error)

    if cfg.get(COMPOSE_ERROR_KEY):
        reason = str(cfg[COMPOSE_ERROR_KEY])
        end("failed", reason, SoftlossError(reason))
        return None
    try:
        from softloss_cli.train.loop import fit

        metrics = fit(cfg, run_dir)
    except DivergedError as exc:
        end("diverged", one_line(exc), exc)
        return None
    except BaseException as exc:
        (run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        end("failed", failure_reason(exc), exc, interrupted)
        if interrupted:
            raise
        return None
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
