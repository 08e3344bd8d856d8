"""The directory a ``softloss train`` launch writes into, settled before Hydra starts.

Hydra names a run ``runs/<data>-<loss>/<date>_<time>`` (a sweep ``runs/multirun/<date>_<time>``)
to the second, so launches started in the same second shared one directory. Here, before
Hydra runs, the default name is resolved and *reserved* (``ownership.reserve_unique``: the
name, else ``<name>-1``...) and handed to Hydra as ``hydra.run.dir``/``hydra.sweep.dir``.

A sweep directory is locked by the launching process for the whole sweep (each job locks
its own directory), and one that holds an earlier sweep is refused unless
``trainer.resume=true`` (the same jobs: those not ok run again, ``runs/job.py``) or
``trainer.overwrite=true`` (the earlier sweep moves aside into ``.overwritten/``). All of it
happens before any file is written; a directory made here and left empty by a refused run
is removed again (``Launch.close``).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from softloss_cli.errors import SoftlossError
from softloss_cli.runs.ownership import RunLock, holds_sweep, move_aside, refuse_existing, reserve_unique

#: Hydra options after which ``softloss train`` runs no job (prints, completes, or uses other configs).
NO_JOB_FLAGS = {"--cfg", "-c", "--info", "--help", "-h", "--hydra-help", "--config-dir", "-cd", "--config-path",
                "-cp", "--config-name", "-cn", "--resolve", "--package", "-p", "--run", "-r",
                "--shell-completion", "-sc"}
#: overrides that may differ between a sweep and its resumed re-run.
_RESUME_FREE = ("trainer.resume", "trainer.overwrite", "trainer.epochs", "trainer.progress", "trainer.log_every",
                "trainer.threads", "trainer.compile", "trainer.diverge_factor", "trainer.diverge_limit")


@dataclass
class Launch:
    """What ``prepare`` settled: Hydra's arguments, the sweep lock, the directory made here."""

    args: list[str]
    lock: RunLock | None = None
    created: Path | None = None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Release the sweep lock; remove the directory made here if nothing was written to it."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.created is not None:
            try:
                self.created.rmdir()  # only when empty
            except OSError:
                return
            _drop_log_files(self.created)


def _drop_log_files(folder: Path) -> None:
    """Close the logging handlers Hydra opened on ``folder/train.log`` (lazily: ``delay``) once a
    refused run's folder is gone, so that this process (an in-process caller) logs on safely."""
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder.absolute():
                logger.removeHandler(handler)
                handler.close()


#: a path Hydra's override grammar takes as it is (no quotes, interpolation or list).
_PLAIN_PATH = re.compile(r"[\w./\-]+")


def _quoted(path: Path) -> str:
    text = str(path)
    if _PLAIN_PATH.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _given(args: list[str], key: str) -> bool:
    return any(a.split("=", 1)[0].lstrip("+~") == key for a in args if "=" in a)


def _literal_run_dir(overrides: list[str]) -> Path | None:
    """The folder of a single run given as a plain path (``hydra.run.dir=runs/x``, the last
    one given wins, as in Hydra): nothing to compose to know it (a tenth of a second saved).
    ``None`` when it is not given or holds anything Hydra would interpret (``${...}``,
    quotes, a sweep list)."""
    value = None
    for override in overrides:
        name, _, given = override.partition("=")
        if name.lstrip("+~") == "hydra.run.dir":
            if name != "hydra.run.dir":  # appended or deleted: Hydra's rules, not ours
                return None
            value = given
    return Path(value).absolute() if value is not None and _PLAIN_PATH.fullmatch(value) else None


def prepare(args: list[str], multirun: bool) -> Launch:
    """Settle the run (or sweep) directory of ``softloss train ARGS``; see the module doc."""
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    if flags & NO_JOB_FLAGS or os.environ.get("RANK", "0") != "0":
        return Launch(list(args))  # no job, or torchrun's other ranks (rank 0 owns the directory)
    overrides = [a for a in args if not a.startswith("-")]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = None if multirun else _literal_run_dir(overrides)
    if folder is None:
        try:
            cfg = _compose(overrides, multirun)
            folder = Path(str(_select(cfg, key))).absolute()
        except Exception:  # noqa: BLE001 - Hydra reports a config that does not compose, in its own words
            return Launch(list(args))
    launch = Launch(list(args))
    if not _given(args, key):
        folder = reserve_unique(folder)
        launch.created = folder
        launch.args.append(f"{key}={_quoted(folder)}")
    elif not folder.exists():
        launch.created = folder  # made by Hydra (or below): removed again if a refusal leaves it empty
    if multirun:
        try:
            _claim_sweep(launch, folder, cfg, overrides)
        except BaseException:
            launch.close()
            raise
    return launch


def _compose(overrides: list[str], multirun: bool):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from softloss_cli.config.catalog import CONFIG_DIR
    from softloss_cli.runs.sweep_plan import first_values

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=first_values(overrides) if multirun else overrides,
                           return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _select(cfg, key: str):
    """``key`` of a composed config, with ``${now:}`` and ``${hydra:...}`` resolved as Hydra would."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    setup_globals()  # registers ${now:} and ${hydra:}
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.select(cfg, key)


def _claim_sweep(launch: Launch, folder: Path, cfg, overrides: list[str]) -> None:
    """Lock the sweep directory and decide about an earlier sweep in it."""
    folder.mkdir(parents=True, exist_ok=True)
    launch.lock = RunLock.acquire(folder, "sweep", hint="wait for it to end or choose another hydra.sweep.dir")
    if not holds_sweep(folder):
        return
    resume, overwrite = bool(cfg.trainer.get("resume")), bool(cfg.trainer.get("overwrite"))
    if resume and overwrite:
        raise SoftlossError("trainer.resume=true and trainer.overwrite=true contradict each other; choose one")
    if overwrite:
        moved = move_aside(folder)
        warnings.warn(f"trainer.overwrite=true: the earlier sweep in {folder} moved to {moved}", stacklevel=2)
        return
    from softloss_cli.runs.sweep import summarize_sweep

    earlier = summarize_sweep(folder)
    if not resume:
        counts = ", ".join(f"{n} {state}" for state, n in earlier["counts"].items())
        detail = f" ({len(earlier['jobs'])} jobs: {counts})" if earlier["jobs"] else ""
        raise refuse_existing(folder, "sweep", "hydra.sweep.dir", detail)
    check_same_jobs(folder, earlier, overrides, cfg)


def _core(overrides) -> set[str]:
    return {o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in _RESUME_FREE
            and not o.lstrip("+~").startswith(("hydra.", "hydra/"))}


def check_same_jobs(folder: Path, earlier: dict, overrides: list[str], cfg) -> None:
    """A resumed sweep must plan the jobs it ran before (job ``i`` with job ``i``'s overrides,
    apart from ``trainer.epochs``/``resume`` and how it shows): else its directories would mix
    two sweeps. Checked for a basic sweep with the default job names (``hydra.sweep.subdir``)."""
    from softloss_cli.runs.sweep_plan import default_job_names, planned_jobs

    if not default_job_names(cfg):
        return
    planned = planned_jobs(overrides, cfg)
    if planned is None:
        return
    for job in earlier["jobs"]:
        name = job["job"]
        if not name.isdigit():
            continue
        i = int(name)
        before, now = _core(job["overrides"]), _core(planned[i]) if i < len(planned) else set()
        if i >= len(planned) or before != now:
            ran = " ".join(sorted(before - now)) or "-"
            differ = " ".join(sorted(now - before)) if i < len(planned) else "(no such job)"
            raise SoftlossError(f"trainer.resume=true into {folder}, but its job {name} ran with {ran} where this "
                                f"sweep's job {name} has {differ}; resume with the sweep's own overrides "
                                f"({folder / 'sweep.json'})")
