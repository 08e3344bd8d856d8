"""Before a basic-sweeper multirun starts: compose every job's config, refuse the sweep if one cannot be.

Hydra composes a job's config only when the launcher reaches it, and a composition error
(``model=mlp,small_cnn model.channels=[8]``: ``mlp`` has no ``channels``) then stops the whole
sweep, leaving the jobs after it unrun and no ``status.json`` for the failing one. Such an
error is a mistake in the command, knowable before any compute is spent, so ``softloss train
-m`` composes every job first (about 20 ms each) and refuses the sweep in one line naming the
job and the problem. Errors that only show at run time (a learning rate the optimizer
refuses, a diverging loss) are the jobs' own: recorded in their ``status.json`` while the
sweep goes on. The Optuna sweeper chooses its jobs as it goes; for it the check is that
every key its search space names exists in the composed config (``hparams_search=optuna``
tunes ``loss.label_smoothing``, which only ``loss=ce`` has), so a search never fails trial
by trial on a key the chosen loss lacks.
"""

from __future__ import annotations

from softloss_cli.errors import SoftlossError

_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def _first_job_config(overrides: list[str]):
    """The config (with ``hydra``) of the sweep's first values; search spaces left out."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from softloss_cli.catalog import CONFIG_DIR

    first = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            first.append(o.input_line)
        elif o.value_type.name in ("CHOICE_SWEEP", "SIMPLE_CHOICE_SWEEP", "RANGE_SWEEP"):
            first.append(f"{o.get_key_element()}={next(o.sweep_string_iterator())}")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=first, return_hydra_config=True)
    except Exception as exc:  # noqa: BLE001 - the first job itself does not compose
        raise _not_composable(0, first, exc) from exc


def planned_jobs(overrides: list[str], cfg=None) -> list[list[str]] | None:
    """The override lists of a basic sweep's jobs, in launch order; None for another sweeper.

    Expands the command-line overrides together with the composed config's
    ``hydra.sweeper.params`` (an experiment preset's sweep), as Hydra's ``BasicSweeper`` does.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = cfg if cfg is not None else _first_job_config(overrides)
    if cfg.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + overrides), None)
    return [list(job) for batch in batches for job in batch]


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
        group, _, leaf = key.partition(".")
        node = cfg.get(group)
        keys = ", ".join(sorted(k for k in node.keys() if k != "_target_")) if OmegaConf.is_dict(node) else ""
        chosen = f"{group}={choices.get(group)}" if choices.get(group) else "this config"
        hint = " (hparams_search=optuna_scale searches optim.lr and loss.logit_scale, which every softmax loss has)" \
            if group == "loss" else ""
        raise SoftlossError(f"the search space tunes {key}, which {chosen} does not have"
                            + (f"; keys under {group}: {keys}" if keys else "") + hint
                            + f"; search one of them on the command line, e.g. '{group}.<key>=interval(a, b)'")


_MISSING = object()


def check_sweep_jobs(overrides: list[str]) -> int:
    """Compose each job of a basic sweep, or check an Optuna search space; raise
    ``SoftlossError`` on the first job that fails. Returns the number of jobs checked (0 for
    another sweeper)."""
    from hydra import compose, initialize_config_dir

    from softloss_cli.catalog import CONFIG_DIR

    cfg = _first_job_config(overrides)
    check_search_space(cfg)
    jobs = planned_jobs(overrides, cfg)
    if not jobs:
        return 0
    failure = None
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for number, job in enumerate(jobs):
            try:
                compose("train", overrides=job)
            except Exception as exc:  # noqa: BLE001 - any composition error is reported the same way
                failure = number, job, exc
                break
    if failure:  # described outside the context: the description may compose a config itself
        raise _not_composable(*failure) from failure[2]
    return len(jobs)


def _not_composable(number: int, job: list[str], exc: Exception) -> SoftlossError:
    from softloss_cli.cli import _describe

    shown = [o for o in job if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return SoftlossError(f"job {number} of the sweep ({' '.join(shown)}) cannot be composed: "
                         f"{_describe(exc, job)}; no job was started")
