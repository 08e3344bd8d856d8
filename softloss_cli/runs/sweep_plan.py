"""A job whose config cannot be composed fails alone, and the user hears of it before the sweep runs.

Hydra composes a job's config only when the launcher reaches it, and a composition error
(``-m model=small_cnn,mlp model.channels=[8]``: ``mlp`` has no ``channels``) stops the whole
sweep there, leaving the jobs after it unrun and no ``status.json`` for the failing one. So:

- ``record_composition_failures`` (installed when ``experiment.py`` is imported, in the
  launching process and in joblib's workers alike) makes such a job compose the base config
  instead, marked with the one-line reason; the task function records it as a ``failed``
  job and the sweep goes on, as for any other failure.
- ``check_sweep_jobs`` composes every job of a basic sweep before it starts (about 20 ms
  each) and returns one warning line per job that cannot be composed, so a mistake in the
  command shows at once, not at the end of a long sweep.
- The Optuna sweeper chooses its jobs as it goes; for it the check is that every key its
  search space names exists in the composed config (``hparams_search=optuna`` tunes
  ``loss.label_smoothing``, which only ``loss=ce`` has): that would fail every trial, so
  the search is refused before it starts.
"""

from __future__ import annotations

from softloss_cli.errors import SoftlossError

_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
#: the key of a job's config that says why its own overrides could not be composed.
COMPOSE_ERROR_KEY = "softloss_compose_error"
_OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
_MISSING = object()


def first_values(overrides: list[str]) -> list[str]:
    """The overrides with each enumerable sweep at its first value and search spaces left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            first.append(o.input_line)
        elif o.value_type.name in ("CHOICE_SWEEP", "SIMPLE_CHOICE_SWEEP", "RANGE_SWEEP"):
            first.append(f"{o.get_key_element()}={next(o.sweep_string_iterator())}")
    return first


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from softloss_cli.config.catalog import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def planned_jobs(overrides: list[str], cfg=None) -> list[list[str]] | None:
    """The override lists of a basic sweep's jobs, in launch order; None for another sweeper.

    Expands the command-line overrides together with the composed config's
    ``hydra.sweeper.params`` (an experiment preset's sweep), as Hydra's ``BasicSweeper`` does.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = cfg if cfg is not None else _compose(first_values(overrides))
    if cfg.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + overrides), None)
    return [list(job) for batch in batches for job in batch]


def default_job_names(cfg) -> bool:
    """Whether the sweep names its jobs ``0``, ``1``... (``hydra.sweep.subdir`` as shipped)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir") == "${hydra.job.num}"


def check_search_space(cfg) -> None:
    """An Optuna search must only name keys the config has (or config groups)."""
    from omegaconf import OmegaConf

    if cfg.hydra.sweeper.get("_target_") != _OPTUNA_SWEEPER:
        return
    choices = cfg.hydra.runtime.choices
    for key in (cfg.hydra.sweeper.get("params") or {}):
        key = str(key).lstrip("+")
        if "/" in key or key in choices or OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            continue
        group = key.partition(".")[0]
        node = cfg.get(group)
        keys = ", ".join(sorted(k for k in node.keys() if k != "_target_")) if OmegaConf.is_dict(node) else ""
        chosen = f"{group}={choices.get(group)}" if choices.get(group) else "this config"
        hint = " (hparams_search=optuna_scale searches optim.lr and loss.logit_scale, which every softmax loss has)" \
            if group == "loss" else ""
        raise SoftlossError(f"the search space tunes {key}, which {chosen} does not have"
                            + (f"; keys under {group}: {keys}" if keys else "") + hint
                            + f"; search one of them on the command line, e.g. '{group}.<key>=interval(a, b)'")


def check_sweep_jobs(overrides: list[str]) -> list[str]:
    """Compose each job of a basic sweep (and check an Optuna search space, raising
    ``SoftlossError`` when it names a missing key); one warning line per job that cannot be
    composed: it will run as a failed job."""
    from hydra import compose, initialize_config_dir

    from softloss_cli.config.catalog import CONFIG_DIR

    first = first_values(overrides)
    try:
        cfg = _compose(first)
    except Exception as exc:  # noqa: BLE001 - the sweep's first values do not compose: nothing more to plan
        return [_warning(0, first, exc)]
    check_search_space(cfg)
    failures = []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for number, job in enumerate(planned_jobs(overrides, cfg) or []):
            try:
                compose("train", overrides=job)
            except Exception as exc:  # noqa: BLE001 - any composition error is reported the same way
                failures.append((number, job, exc))
    # Described outside the context: the description may compose a config itself.
    return [_warning(number, job, exc) for number, job, exc in failures]


def _warning(number: int, job: list[str], exc: Exception) -> str:
    return (f"job {number} of the sweep ({' '.join(_shown(job))}) cannot be composed and will be recorded as "
            f"failed: {_describe_failure(exc, job)}")


def _shown(job: list[str]) -> list[str]:
    return [o for o in job if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]


def _describe_failure(exc: Exception, job: list[str], composed=None) -> str:
    from softloss_cli.config.describe import describe_exception

    return describe_exception(exc, list(job), composed)


def record_composition_failures() -> None:
    """Patch Hydra's ``ConfigLoaderImpl.load_sweep_config`` (idempotent): a job whose
    overrides do not compose gets the base config (with the job's group choices when those
    compose) plus ``softloss_compose_error`` = the one-line reason, and its own overrides in
    ``hydra.overrides.task`` (so ``.hydra/overrides.yaml`` and ``status.json`` name them)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import open_dict

    original = ConfigLoaderImpl.load_sweep_config
    if getattr(original, "_softloss", False):
        return

    def load_sweep_config(self, master_config, sweep_overrides):
        try:
            return original(self, master_config, sweep_overrides)
        except Exception as exc:  # noqa: BLE001 - this job's own composition error
            choices = [o for o in sweep_overrides if "." not in o.split("=", 1)[0]]
            try:
                cfg = original(self, master_config, choices)
            except Exception:  # noqa: BLE001 - a group choice itself is the problem
                cfg = original(self, master_config, [])
            reason = _describe_failure(exc, list(sweep_overrides), cfg)
            with open_dict(cfg):
                cfg.hydra.overrides.task = list(sweep_overrides)
                cfg[COMPOSE_ERROR_KEY] = f"cannot be composed: {reason}"
            return cfg

    load_sweep_config._softloss = True
    ConfigLoaderImpl.load_sweep_config = load_sweep_config
