"""The loss interface the trainer sees, and the softmax-loss base every softmax family shares.

Contract (DESIGN.md): a loss is an ``nn.Module``; ``forward(logits, target, **aux)``
takes logits ``[B, C]`` (any dtype; computed in float32 with autocast off), the
targets of its task kind, optional auxiliary outputs of the model (``aux_logits``,
``gate_logits``...), and returns a scalar. After each call ``last_parts`` holds the
detached terms (``main``, ``penalty``...) for logging, without a host sync.
"""

from __future__ import annotations

import torch
from torch import nn

from softloss_cli.registry import Registry

REDUCTIONS = ("mean", "sum", "none")

#: name -> loss class; filled by the ``@LOSSES.register`` decorators of each family module.
LOSSES = Registry("loss")
#: name -> per-sample penalty ``f(log_probs [B, C]) -> [B]``; see ``losses/confidence.py``.
PENALTIES = Registry("penalty")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def reduce_loss(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Mean or sum over the batch, or the per-sample vector for ``'none'``."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class ClassificationLoss(nn.Module):
    """Base class: what a loss accepts and how its outputs become scores.

    Class attributes a loss sets:
        task_kinds: the task kinds it trains on (checked before training).
        activation: ``'softmax'`` or ``'sigmoid'``: how metrics turn its logits into scores.
        needs_aux: it needs a second head (``model.heads=two``), passed as ``aux_logits``.
        set_source: which output Average-K sets are read from (``'logits'`` or ``'aux_logits'``).
    """

    task_kinds: tuple[str, ...] = ("multiclass", "ordinal")
    activation: str = "softmax"
    needs_aux: bool = False
    set_source: str = "logits"

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.last_parts: dict[str, torch.Tensor] = {}

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook for schedules inside a loss (annealed temperatures); default: nothing."""


class SoftmaxLoss(ClassificationLoss):
    """A loss on ``softmax(logit_scale * logits)`` with an optional confidence penalty.

    Subclasses implement ``per_sample(logits, target, **aux) -> [B]`` on float32 logits
    that are already scaled.

    Args:
        logit_scale: alpha in ``softmax(alpha * z)``; > 1 sharpens (a temperature of 1/alpha).
        penalty: name of a registered penalty (``qq``, ``entropy``...) or None.
        penalty_weight: weight of the penalty's batch mean, added to the main term.
        penalty_on: ``'logits'`` or the name of an auxiliary output (``'gate_logits'``)
            the penalty is computed on.
        reduction: ``'mean'`` (default) | ``'sum'`` | ``'none'`` over the batch.
    """

    def __init__(
        self,
        logit_scale: float = 1.0,
        penalty: str | None = None,
        penalty_weight: float = 0.0,
        penalty_on: str = "logits",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        if logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
        self.logit_scale = float(logit_scale)
        self.penalty_name = penalty or None
        self.penalty_fn = PENALTIES.get(penalty) if self.penalty_name else None
        self.penalty_weight = float(penalty_weight)
        self.penalty_on = penalty_on

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        raise NotImplementedError

    def _penalty_source(self, aux: dict) -> torch.Tensor:
        if self.penalty_on not in aux:
            from softloss_cli.errors import SoftlossError

            given = ", ".join(["logits", *sorted(aux)])
            raise SoftlossError(f"loss.penalty_on={self.penalty_on}: the model gives no such output; "
                                f"this model's outputs: {given}")
        return aux[self.penalty_on]

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        # float32 with autocast off: bf16/fp16 log-probabilities underflow and give inf/NaN.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            z = logits.float() * self.logit_scale
            aux32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in aux.items()}
            main = reduce_loss(self.per_sample(z, target, **aux32), self.reduction)
            parts = {"main": main.detach()}
            loss = main
            if self.penalty_fn is not None:
                source = z if self.penalty_on == "logits" else self._penalty_source(aux32)
                pen = reduce_loss(self.penalty_fn(torch.log_softmax(source, dim=-1)), self.reduction)
                parts["penalty"] = pen.detach()
                loss = loss + self.penalty_weight * pen
        self.last_parts = parts
        return loss
