"""Figures logged to TensorBoard at the end of a run (matplotlib, imported only here).

A figure function is registered for task kinds with ``@figure(*kinds)`` and has the
signature ``fn(outputs: EvalOutputs, task) -> dict[str, matplotlib.figure.Figure]``;
the names become TensorBoard image tags under ``test/`` and PNG files
``<run>/plots/test_<name>.png`` (``RunLogger.finish``). ``plots/classification.py`` gives
every run a reliability diagram and, for single-label tasks up to 50 classes, a confusion
matrix on a log colour scale; scenario modules register their own (e.g. MAE per class for
ordinal data). A figure function may return ``{}`` when it does not apply.
"""

from __future__ import annotations

from collections.abc import Callable

_FIGURES: list[tuple[tuple[str, ...], Callable]] = []


def figure(*kinds: str):
    """Register ``fn(outputs, task) -> {name: Figure}`` for the given task kinds."""

    def wrap(fn):
        _FIGURES.append((kinds, fn))
        return fn

    return wrap


def task_figures(outputs, task) -> dict:
    """All figures registered for ``task.eval_kind``; matplotlib with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    _import_families()
    figures = {}
    for kinds, fn in _FIGURES:
        if task.eval_kind in kinds:
            figures.update(fn(outputs, task))
    return figures


def _import_families() -> None:
    from softloss_cli.plots import FAMILIES
    from softloss_cli.registry import import_families

    import_families("softloss_cli.plots", FAMILIES)


def plain_log_ticks(axis) -> None:
    """Label a log-scaled ``axis`` (``ax.yaxis``, a colorbar's ``cax.yaxis``) in plain text:
    ``1``, ``10``, ``100``, ``1e+05`` instead of matplotlib's default ``$10^{2}$``.

    The default formatter writes mathtext, whose parser (pyparsing) costs more than the rest
    of a small figure's text together; counts read as well written out. Minor ticks get labels
    only where matplotlib's default would give them (an axis spanning under about a decade).
    """
    from matplotlib.ticker import LogFormatter

    base = axis.get_transform().base
    axis.set_major_formatter(LogFormatter(base))
    axis.set_minor_formatter(LogFormatter(base, labelOnlyBase=False))
