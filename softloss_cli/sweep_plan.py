"""Before a basic-sweeper multirun starts: compose every job's config, refuse the sweep if one cannot be.

Hydra composes a job's config only when the launcher reaches it, and a composition error
(``model=mlp,small_cnn model.channels=[8]``: ``mlp`` has no ``channels``) then stops the whole
sweep, leaving the jobs after it unrun and no ``status.json`` for the failing one. Such an
error is a mistake in the command, knowable before any compute is spent, so ``softloss train
-m`` composes every job first (about 20 ms each) and refuses the sweep in one line naming the
job and the problem. Errors that only show at run time (a learning rate the optimizer
refuses, a diverging loss) are the jobs' own: recorded in their ``status.json`` while the
sweep goes on. Other sweepers (Optuna) choose their jobs as they go and are not checked.
"""

from __future__ import annotations

from softloss_cli.errors import SoftlossError

_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def planned_jobs(overrides: list[str]) -> list[list[str]] | None:
    """The override lists of a basic sweep's jobs, in launch order; None for another sweeper.

    Expands the command-line overrides together with the composed config's
    ``hydra.sweeper.params`` (an experiment preset's sweep), as Hydra's ``BasicSweeper`` does.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from softloss_cli.catalog import CONFIG_DIR

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    first = [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
             for o in parsed]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=first, return_hydra_config=True)
    except Exception as exc:  # noqa: BLE001 - the first job itself does not compose
        raise _not_composable(0, first, exc) from exc
    if cfg.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    batches = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)
    return [list(job) for batch in batches for job in batch]


def check_sweep_jobs(overrides: list[str]) -> int:
    """Compose each job of a basic sweep; raise ``SoftlossError`` on the first that fails.

    Returns the number of jobs checked (0 for another sweeper).
    """
    from hydra import compose, initialize_config_dir

    from softloss_cli.catalog import CONFIG_DIR

    jobs = planned_jobs(overrides)
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
