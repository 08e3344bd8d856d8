"""Metrics: pure functions over whole-split tensors, importable without Hydra.

Each family module (``classification``, ``ordinal``, ``confidence``, ``multilabel``,
``average_k``...) exposes plain functions ``(scores, targets, ...) -> float`` and one
*metric group* registered with ``@metric_group(kinds)``: a function
``(outputs: EvalOutputs, task, reference: EvalOutputs | None) -> dict[str, float]`` that
the evaluator calls for every split whose task kind matches. ``reference`` is the
validation split's outputs when the test split is scored (a global Average-K threshold
is chosen on validation), else None. Names returned are bare (``mae``); the evaluator
prefixes the split (``test/mae``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class EvalOutputs:
    """Everything a model produced on one split, on the CPU, float32.

    logits: ``[N, C]``; scores: ``[N, C]`` probabilities by the loss's activation
    (softmax or sigmoid); targets: the split's targets; aux: other model outputs
    (``aux_logits``, ``gate_logits``, ...); posterior: true ``p(y|x)`` ``[N, C]`` when
    the data knows it; extras: per-sample side information from the data (e.g. family);
    info: run-level facts such as ``set_source`` (which output Average-K sets use).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    posterior: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


MetricGroup = Callable[..., dict]
_GROUPS: list[tuple[tuple[str, ...], str, MetricGroup]] = []


def metric_group(*kinds: str) -> Callable[[MetricGroup], MetricGroup]:
    """Register ``fn(outputs, task, reference) -> dict`` for the given task kinds."""

    def wrap(fn: MetricGroup) -> MetricGroup:
        _GROUPS.append((kinds, f"{fn.__module__}.{fn.__name__}", fn))
        return fn

    return wrap


def compute_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None,
                    kind: str | None = None) -> dict[str, float]:
    """All registered metric groups that apply to ``kind`` (default ``task.eval_kind``), merged
    into one flat dict. ``kind='partial'`` scores a partial task's training split."""
    kind = kind or task.eval_kind
    result: dict[str, float] = {}
    for kinds, _name, fn in _GROUPS:
        if kind in kinds:
            result.update({k: float(v) for k, v in fn(outputs, task, reference).items()})
    return result


#: substrings of metric names where a lower value is better (everything else: higher).
_LOWER_IS_BETTER = ("loss", "nll", "mae", "rps", "ece", "mce", "rmsce", "brier", "error", "entropy", "fpr", "gap",
                    "violation", "emd")
#: substrings of descriptive metrics with no better direction: the realised Average-K set size
#: is a target to hit (K), not to minimise; a threshold, a count of active scores or of experts
#: in use describes; so do the share of empty Average-K sets, which head the sets came from, and
#: the Bayes oracle's own accuracies (a property of the data; its *gap* to a run stays lower).
_NO_DIRECTION = ("set_size", "threshold", "mean_active", "mean_labels", "active_experts", "empty_rate",
                 "set_source", "source_aux", "oracle_acc", "oracle_macro", "oracle_head", "oracle_medium",
                 "oracle_tail")


def metric_direction(name: str) -> str:
    """``'lower'``, ``'higher'`` or ``'none'`` (descriptive: report never marks a best value)."""
    bare = name.rsplit("/", 1)[-1]
    if any(token in bare for token in _NO_DIRECTION):
        return "none"
    return "lower" if any(token in bare for token in _LOWER_IS_BETTER) else "higher"


def lower_is_better(name: str) -> bool:
    """Direction of a metric by its name (``test/mae`` -> True, ``val/accuracy`` -> False).

    Descriptive metrics (``metric_direction == 'none'``) count as higher-is-better here, which
    only matters if a user monitors one for the best checkpoint."""
    return metric_direction(name) == "lower"


# Family modules register their metric groups on import (after metric_group exists).
from softloss_cli.registry import import_families  # noqa: E402

import_families("softloss_cli.metrics", ("classification", "ordinal", "groups", "confidence", "multilabel", "average_k",
                                         "negative"))

__all__ = ["EvalOutputs", "compute_metrics", "metric_group", "lower_is_better", "metric_direction"]
