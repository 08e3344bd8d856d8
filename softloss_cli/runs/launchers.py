"""joblib sweeps that lose no job to another's death.

loky's pool breaks when one of its workers dies (kill -9, the out-of-memory killer) and
kills every other worker with it: healthy jobs die and the queued ones never run.
``hydra/launcher=joblib`` is therefore softloss's ``IsolatedJoblibLauncher`` (a subclass of the
plugin's launcher, in the ``hydra_plugins.softloss_launchers`` namespace package, where Hydra
finds launchers), whose ``launch`` is ``launch_isolated`` below: the plugin's own launch, with
each job run in a child process of its worker (``execute_job_isolated``). A job that dies takes
only itself; the worker records it ``killed`` (with the signal) in the job's ``status.json``,
frees its directory and takes the next job.

(submitit needs no change here: its ``checkpoint`` hook requeues the job with the same
overrides, and a requeued job resumes by itself: ``ownership.claim_run_dir``.)
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from pathlib import Path

from softloss_cli.runs.ownership import LOCK_NAME, read_lock
from softloss_cli.runs.status import mark_killed


def launch_isolated(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    """hydra-joblib-launcher's ``_core.launch`` (the same logging, loky backend and job
    arguments), with every job run by ``execute_job_isolated`` instead of ``execute_job``."""
    import logging

    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    log = logging.getLogger("hydra_plugins.hydra_joblib_launcher._core")
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    joblib_cfg = launcher.joblib
    joblib_cfg["backend"] = "loky"  # as the plugin: the threading backend is incompatible with Hydra
    process_joblib_cfg(joblib_cfg)
    log.info("Joblib.Parallel({}) is launching {} jobs".format(
        ",".join(f"{k}={v}" for k, v in joblib_cfg.items()), len(job_overrides)))
    log.info(f"Launching jobs, sweep output dir : {sweep_dir}")
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#{} : {}".format(idx, " ".join(filter_overrides(overrides))))
    singleton_state = Singleton.get_state()
    runs = Parallel(**joblib_cfg)(
        delayed(execute_job_isolated)(initial_job_idx + idx, overrides, launcher.hydra_context, launcher.config,
                                      launcher.task_function, singleton_state)
        for idx, overrides in enumerate(job_overrides))
    assert all(isinstance(run, JobReturn) for run in runs)
    return runs


def execute_job_isolated(idx: int, overrides, hydra_context, config, task_function, singleton_state):
    """The plugin's ``execute_job`` in a forked child of this worker. A child that dies without
    an answer (a signal, the OOM killer) is recorded ``killed`` and answered as a completed job
    with no value: Hydra's sweeper would stop the whole sweep on a failed one."""
    from hydra.core.utils import JobReturn, JobStatus

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    reader, writer = ctx.Pipe(duplex=False)
    args = (idx, overrides, hydra_context, config, task_function, singleton_state)
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    child = ctx.Process(target=_run_child, args=(writer, execute_job, args))
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
    print(f"job {idx} killed: {reason}", flush=True)
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                    working_dir=str(job_dir) if job_dir else None)
    ret.return_value = None
    return ret


def _run_child(conn, execute_job, args) -> None:
    from hydra.core.utils import JobReturn, JobStatus

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
