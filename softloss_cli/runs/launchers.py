"""Sweep launchers that lose no job: the configs ``hydra/launcher={joblib,submitit_local,submitit_slurm}``
name these subclasses of the Hydra plugins' launchers.

- ``JoblibLauncher``: joblib's loky pool breaks when one of its workers dies (kill -9, the
  out-of-memory killer) and kills every other worker with it, so healthy jobs die and the
  queued ones never run. Here each job runs in a child process of its worker: a job that
  dies takes only itself; the worker records it as ``killed`` (with the signal) in the job's
  ``status.json``, releases its directory and takes the next job.
- ``SlurmLauncher`` / ``LocalLauncher`` (submitit): on submitit's preemption/timeout signal the
  job first checkpoints (``train/preemption.py``), then submitit calls the launcher's
  ``checkpoint`` hook, which requeues the job with ``trainer.resume=true`` so that it
  continues from its checkpoint instead of being refused by its own directory.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from softloss_cli.runs.ownership import LOCK_NAME, read_lock
from softloss_cli.runs.status import mark_killed

# Both plugins are optional extras ('softloss-cli[joblib]', '[submitit]'): each class exists
# when its plugin is installed (config/choices.py refuses the launcher otherwise).
try:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as PluginJoblibLauncher
except ImportError:  # pragma: no cover
    PluginJoblibLauncher = object
try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as submitit_plugin
except ImportError:  # pragma: no cover
    submitit_plugin = None

log = logging.getLogger(__name__)

RESUME = "trainer.resume=true"


class JoblibLauncher(PluginJoblibLauncher):
    """hydra-joblib-launcher, every job in its own child process (see the module doc)."""

    def launch(self, job_overrides, initial_job_idx: int):
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, filter_overrides, setup_globals
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = self.joblib
        joblib_cfg["backend"] = "loky"  # as the plugin: threads do not work with Hydra
        process_joblib_cfg(joblib_cfg)
        log.info("Joblib.Parallel(%s) is launching %d jobs, each in its own process",
                 ",".join(f"{k}={v}" for k, v in joblib_cfg.items()), len(job_overrides))
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        runs = Parallel(**joblib_cfg)(
            delayed(execute_job_isolated)(initial_job_idx + idx, overrides, self.hydra_context, self.config,
                                          self.task_function, state)
            for idx, overrides in enumerate(job_overrides)
        )
        return list(runs)


def execute_job_isolated(idx: int, overrides, hydra_context, config, task_function, singleton_state) -> JobReturn:
    """The plugin's ``execute_job`` in a forked child of this worker. A child that dies without
    an answer (a signal, the OOM killer) is recorded ``killed`` and answered as a completed job
    with no value: Hydra's sweeper would stop the whole sweep on a failed one."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    reader, writer = ctx.Pipe(duplex=False)
    args = (idx, overrides, hydra_context, config, task_function, singleton_state)
    child = ctx.Process(target=_run_child, args=(writer, execute_job, args), daemon=False)
    child.start()
    writer.close()
    try:
        answer = reader.recv()
    except EOFError:  # the child died before answering
        answer = None
    child.join()
    if isinstance(answer, JobReturn):
        return answer
    code = child.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with code {code}"
    reason = f"the job's process was {how} before it recorded an outcome"
    job_dir = _job_dir(idx, overrides, hydra_context, config, singleton_state)
    if job_dir is not None:
        mark_killed(job_dir, reason, list(overrides))
        owner = read_lock(job_dir)
        if owner and owner.get("pid") == child.pid:  # its lock is stale now: free the directory
            (job_dir / LOCK_NAME).unlink(missing_ok=True)
    print(f"job {idx} killed: {reason}")
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                    working_dir=str(job_dir) if job_dir else None)
    ret.return_value = None
    return ret


def _run_child(conn, execute_job, args) -> None:
    try:
        ret = execute_job(*args)
        try:
            conn.send(ret)
        except Exception:  # noqa: BLE001 - an unpicklable value: the outcome is in status.json anyway
            conn.send(JobReturn(overrides=list(args[1]), status=JobStatus.COMPLETED))
    finally:
        conn.close()


def _job_dir(idx: int, overrides, hydra_context, config, singleton_state) -> Path | None:
    """The directory Hydra gives job ``idx`` (``hydra.sweep.dir/hydra.sweep.subdir``)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals
        from omegaconf import open_dict

        setup_globals()
        Singleton.set_state(singleton_state)
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        return Path(str(cfg.hydra.sweep.dir)).absolute() / str(cfg.hydra.sweep.subdir)
    except Exception:  # noqa: BLE001 - best effort: the sweep summary still sees a job left "running"
        return None


def with_resume(overrides) -> list[str]:
    """A requeued job's overrides: the same, continuing from its checkpoint."""
    return [o for o in overrides if not o.lstrip("+").startswith("trainer.resume=")] + [RESUME]


class ResumingCheckpoint:
    """Mixin for submitit launchers: the ``checkpoint`` hook requeues with ``trainer.resume=true``."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on its preemption/timeout signal (called after softloss saved a
        checkpoint): requeue this job with the same overrides plus ``trainer.resume=true``."""
        if args:
            args = (with_resume(args[0]), *args[1:])
        elif "sweep_overrides" in kwargs:
            kwargs["sweep_overrides"] = with_resume(kwargs["sweep_overrides"])
        return super().checkpoint(*args, **kwargs)


if submitit_plugin is not None:

    class SlurmLauncher(ResumingCheckpoint, submitit_plugin.SlurmLauncher):
        """hydra-submitit-launcher's Slurm launcher whose requeued jobs resume."""

    class LocalLauncher(ResumingCheckpoint, submitit_plugin.LocalLauncher):
        """hydra-submitit-launcher's local launcher whose requeued jobs resume."""
