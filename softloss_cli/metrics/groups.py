"""Error of sums over the data's own groups (``extras['group']``: e.g. the 8 images of one sequence).

``group8_sum_mae`` (metrics/ordinal.py) sums consecutive blocks of 8 in stored order; a
manifest with a ``group`` column says which images belong together, and an ordinal run
then also reports, over those groups:

- ``group_sum_mae``: ``(1/G) sum_g |sum_{i in g} E[v | x_i] - sum_{i in g} v_{y_i}|`` (expected values);
- ``group_sum_mae_argmax``: the same with the argmax class's value.

Samples with group id ``-1`` (no group) are left out; groups of any size count once each.
"""

from __future__ import annotations

import torch

from softloss_cli.metrics import EvalOutputs, metric_group
from softloss_cli.metrics.classification import normalise_rows

__all__ = ["group_sums", "grouped_sum_mae", "group_metrics"]


def group_sums(values: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, sums)``: the distinct group ids ``>= 0`` (sorted) and ``sum_{i: g_i = id} values_i`` (float64)."""
    keep = groups >= 0
    ids, inverse = torch.unique(groups[keep], return_inverse=True)
    sums = torch.zeros(len(ids), dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse.to(values.device), values[keep].to(torch.float64))
    return ids, sums


def grouped_sum_mae(predictions: torch.Tensor, true_values: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over groups of ``|sum of predictions - sum of true values|``; NaN when no sample has a group."""
    _, diff = group_sums(predictions.to(torch.float64) - true_values.to(torch.float64), groups)
    return diff.abs().mean().item() if len(diff) else float("nan")


@metric_group("ordinal")
def group_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None) -> dict[str, float]:
    """``group_sum_mae`` and ``group_sum_mae_argmax`` when the split carries ``extras['group']``."""
    groups = outputs.extras.get("group")
    if groups is None or not bool((groups >= 0).any()):
        return {}
    values = torch.tensor(task.values, dtype=torch.float64)
    probs = normalise_rows(outputs.scores).to(torch.float64)
    targets = outputs.targets.to(torch.int64)
    true_values = values[targets]
    groups = groups.to(torch.int64)
    return {
        "group_sum_mae": grouped_sum_mae(probs @ values, true_values, groups),
        "group_sum_mae_argmax": grouped_sum_mae(values[outputs.scores.argmax(dim=1)], true_values, groups),
    }
