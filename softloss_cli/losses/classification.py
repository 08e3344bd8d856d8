"""Plain multiclass losses: cross-entropy (the baseline every scenario compares against)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softloss_cli.losses.base import LOSSES, SoftmaxLoss


@LOSSES.register("ce", "softmax cross-entropy, optional label smoothing (the baseline)")
class CrossEntropyLoss(SoftmaxLoss):
    """Softmax cross-entropy ``-log softmax(alpha * z)_y``.

    Args:
        label_smoothing: epsilon in [0, 1): the target is ``(1 - eps) * onehot + eps / C``.
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.

    Shapes: logits ``[B, C]``, target int64 ``[B]``; returns a scalar (mean over the batch).
    """

    task_kinds = ("multiclass", "ordinal")

    def __init__(self, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        return F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing)
