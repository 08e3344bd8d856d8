"""Multi-label losses: is each category present? Softmax against sigmoids.

A softmax sums to 1, so it cannot say "two objects" or "none"; per-category sigmoids can.
Every loss here takes logits ``[B, C]`` and float multi-hot targets ``[B, C]`` (values in
[0, 1]; soft targets work too) and returns the batch mean of a per-sample loss.

Choice shared by the sigmoid losses (``bce``, ``asl``, ``focal``): the per-sample loss is
the **sum** over the C categories, as in the ASL paper and timm's ``AsymmetricLossMultiLabel``
(arXiv 2009.14119), not the mean over all B x C entries that ``nn.BCEWithLogitsLoss()``
uses: ours is ``C`` times PyTorch's default, which keeps the loss on the scale of the
softmax CE (also a sum over classes) so that one learning rate suits all four.

Everything is computed in float32 with autocast off, from ``logsigmoid`` (never
``log(sigmoid(z))``), so the losses are finite for logits of any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softloss_cli.losses.base import LOSSES, ClassificationLoss, SoftmaxLoss, reduce_loss

__all__ = ["SigmoidLoss", "SoftmaxMultiLabelLoss", "BCELoss", "AsymmetricLoss", "FocalLoss"]

EMPTY_MODES = ("uniform", "ignore")


def check_multihot(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Shape check only (no host sync): multi-label targets are ``[B, C]`` like the logits."""
    if target.shape != logits.shape:
        raise ValueError(
            f"loss={name} expects multi-hot targets shaped like the logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )


class SigmoidLoss(ClassificationLoss):
    """Base of the per-category sigmoid losses: scores are ``sigmoid(logits)``.

    Subclasses implement ``per_sample(logits_f32, target, **aux) -> [B]``; ``forward``
    casts to float32 with autocast off (bf16/fp16 ``logsigmoid`` of large logits rounds to
    0 and the focal weights underflow), reduces over the batch and sets ``last_parts``.
    """

    activation = "sigmoid"
    task_kinds = ("multilabel",)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            z = logits.float()
            aux32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in aux.items()}
            loss = reduce_loss(self.per_sample(z, target, **aux32), self.reduction)
        self.last_parts = {"main": loss.detach()}
        return loss


@LOSSES.register("softmax_ml", "softmax CE against the normalised multi-hot target (cannot say 'none')")
class SoftmaxMultiLabelLoss(SoftmaxLoss):
    """Softmax cross-entropy against the multi-hot target divided by its sum.

    ``loss_i = -sum_c q_ic log softmax(alpha * z_i)_c`` with ``q_i = y_i / sum_c y_ic``
    (Mahajan et al. 2018, "Exploring the limits of weakly supervised pretraining",
    arXiv 1805.00932, train with softmax on normalised multi-hot hashtag targets).

    An image with no positive category has no distribution to normalise: it is handled
    by ``empty``:
        ``'uniform'`` (default): the target is ``1/C`` for every class, the closest a softmax
        can come to "nothing here" (all scores low; at a 0.5 threshold nothing is active
        when C > 2).
        ``'ignore'``: the row's loss is 0; the batch mean still divides by B, so empty images
        dilute the batch (like a zero weight, not like ``ignore_index``).

    Args:
        empty: ``'uniform'`` | ``'ignore'``.
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.

    Shapes: logits ``[B, C]``, target float ``[B, C]`` (non-negative; soft weights are
    normalised the same way); returns a scalar (mean over the batch).
    """

    task_kinds = ("multilabel",)

    def __init__(self, empty: str = "uniform", **kwargs):
        super().__init__(**kwargs)
        if empty not in EMPTY_MODES:
            raise ValueError(f"empty must be one of {', '.join(EMPTY_MODES)}, got {empty!r}")
        self.empty = empty

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        check_multihot(logits, target, "softmax_ml")
        t = target.float()
        total = t.sum(dim=1, keepdim=True)
        # clamp_min keeps 0/0 out of the graph; empty rows are replaced just below.
        q = t / total.clamp_min(torch.finfo(torch.float32).tiny)
        if self.empty == "uniform":
            q = torch.where(total > 0, q, torch.full_like(q, 1.0 / q.shape[1]))
        return -(q * torch.log_softmax(logits, dim=1)).sum(dim=1)


@LOSSES.register("bce", "binary cross-entropy with logits per category (optional pos_weight)")
class BCELoss(SigmoidLoss):
    """Binary cross-entropy per category, summed over categories.

    ``loss_i = -sum_c [ w_c y_ic log sigmoid(z_ic) + (1 - y_ic) log(1 - sigmoid(z_ic)) ]``,
    computed by ``F.binary_cross_entropy_with_logits`` (the log-sum-exp form, finite for
    any logit).

    Args:
        pos_weight: ``w_c``, the weight of the positive term: None (1), one number for every
            category, or a list of C numbers (e.g. ``n_negative / n_positive`` per category).
        reduction: ``'mean'`` over the batch (default) | ``'sum'`` | ``'none'``.

    Shapes: logits ``[B, C]``, target float ``[B, C]`` in [0, 1]; returns a scalar. Sum over
    categories (see the module docstring): ``C`` times ``nn.BCEWithLogitsLoss()``.
    """

    def __init__(self, pos_weight: float | list[float] | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        if pos_weight is None:
            self.pos_weight = None
        else:
            w = torch.as_tensor(pos_weight, dtype=torch.float32)
            if w.ndim > 1 or (w < 0).any() or not torch.isfinite(w).all():
                raise ValueError(f"pos_weight must be a number or a list of numbers >= 0, got {pos_weight}")
            self.register_buffer("pos_weight", w, persistent=False)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        check_multihot(logits, target, "bce")
        pos_weight = self.pos_weight
        if pos_weight is not None:
            if pos_weight.ndim == 1 and len(pos_weight) != logits.shape[1]:
                raise ValueError(f"pos_weight has {len(pos_weight)} entries for {logits.shape[1]} categories")
            pos_weight = pos_weight.to(logits.device)  # the trainer does not move losses to the device
        return F.binary_cross_entropy_with_logits(
            logits, target.float(), pos_weight=pos_weight, reduction="none"
        ).sum(dim=1)


def _safe_pow(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """``base ** exponent`` for base >= 0 with a finite gradient where base = 0.

    For 0 < exponent < 1 the derivative at 0 is infinite and, multiplied by the zero
    gradient of a clamp, gives NaN; the double ``where`` keeps 0 out of ``pow``'s backward.
    ``0 ** 0`` is 1, as in torch.
    """
    if exponent == 0:
        return torch.ones_like(base)
    positive = base > 0
    safe = torch.where(positive, base, torch.ones_like(base))
    return torch.where(positive, safe.pow(exponent), torch.zeros_like(base))


@LOSSES.register("asl", "asymmetric loss: focusing on negatives + probability shifting (Ridnik et al. 2021)")
class AsymmetricLoss(SigmoidLoss):
    """Asymmetric loss (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label
    Classification", arXiv 2009.14119).

    With ``p = sigmoid(z)`` and the shifted probability ``p_m = max(p - m, 0)``:

        ``L+ = (1 - p)^gamma_pos * log(p)``
        ``L- = p_m^gamma_neg * log(1 - p_m)``
        ``loss_i = -sum_c [ y_ic L+_ic + (1 - y_ic) L-_ic ]``

    Easy negatives (``p < m``) are discarded outright and the rest are down-weighted more
    than positives (``gamma_neg > gamma_pos``), which counters the many negatives per image.

    Args:
        gamma_neg: focusing exponent of the negatives (paper: 4).
        gamma_pos: focusing exponent of the positives (paper: 0).
        clip: the probability margin ``m`` in [0, 1) (paper: 0.05); 0 turns shifting off.
        detach_weights: compute the focusing weights without gradient, as the authors'
            training script does (``disable_torch_grad_focal_loss=True``); default False
            (the gradient of the loss as written, as timm's default).
        reduction: ``'mean'`` over the batch (default) | ``'sum'`` | ``'none'``.

    Numerics (our choices): ``log p = logsigmoid(z)``; ``log(1 - p_m) = log(min(1,
    sigmoid(-z) + m))`` (exact, and never ``log 0`` when m > 0; ``logsigmoid(-z)`` when
    m = 0); ``(1 - p)^g = exp(g * logsigmoid(-z))`` and, without clipping,
    ``p^g = exp(g * logsigmoid(z))``, so weights never underflow to NaN gradients. The
    authors' code adds ``eps = 1e-8`` inside the logs instead; here no eps is needed.

    Shapes: logits ``[B, C]``, target float ``[B, C]`` in [0, 1]; returns a scalar (sum over
    categories, mean over the batch).
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 detach_weights: bool = False, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma_neg < 0 or gamma_pos < 0:
            raise ValueError(f"gamma_neg and gamma_pos must be >= 0, got {gamma_neg} and {gamma_pos}")
        if not 0.0 <= clip < 1.0:
            raise ValueError(f"clip must be in [0, 1), got {clip}")
        self.gamma_neg, self.gamma_pos, self.clip = float(gamma_neg), float(gamma_pos), float(clip)
        self.detach_weights = bool(detach_weights)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        check_multihot(logits, target, "asl")
        t = target.float()
        log_p = F.logsigmoid(logits)
        log_1mp = F.logsigmoid(-logits)
        if self.clip > 0:
            # 1 - p_m = min(1, 1 - p + m); 1 - p = sigmoid(-z) keeps precision where p ~ 1.
            log_1mpm = torch.log(torch.clamp(torch.sigmoid(-logits) + self.clip, max=1.0))
            w_neg = _safe_pow(torch.clamp(torch.sigmoid(logits) - self.clip, min=0.0), self.gamma_neg)
        else:
            log_1mpm = log_1mp
            w_neg = torch.exp(self.gamma_neg * log_p)
        w_pos = torch.exp(self.gamma_pos * log_1mp)
        if self.detach_weights:
            w_pos, w_neg = w_pos.detach(), w_neg.detach()
        return -(t * w_pos * log_p + (1.0 - t) * w_neg * log_1mpm).sum(dim=1)


@LOSSES.register("focal", "binary focal loss per category (Lin et al. 2017)")
class FocalLoss(SigmoidLoss):
    """Binary (sigmoid) focal loss per category (Lin et al. 2017, "Focal Loss for Dense
    Object Detection", arXiv 1708.02002), summed over categories.

        ``loss_i = -sum_c [ a y_ic (1 - p_ic)^gamma log p_ic
                            + (1 - a) (1 - y_ic) p_ic^gamma log(1 - p_ic) ]``

    with ``p = sigmoid(z)``; ``(1 - p)^g = exp(g * logsigmoid(-z))``, ``p^g = exp(g *
    logsigmoid(z))`` and the logs are ``logsigmoid(+-z)``: finite for any logit.

    Args:
        gamma: focusing exponent >= 0 (paper: 2; 0 gives BCE).
        alpha: weight ``a`` of the positives in [0, 1], or None for no weighting (``a`` = 1
            on positives and 1 on negatives: our default, since here about 17% of the
            entries are positive; the paper uses 0.25 for dense detection, where
            negatives outnumber positives by orders of magnitude).
        reduction: ``'mean'`` over the batch (default) | ``'sum'`` | ``'none'``. The paper
            normalises by the number of positive anchors; we sum over categories and
            average over images, like the other sigmoid losses here.

    Shapes: logits ``[B, C]``, target float ``[B, C]`` in [0, 1]; returns a scalar.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or null, got {alpha}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        check_multihot(logits, target, "focal")
        t = target.float()
        log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
        pos = torch.exp(self.gamma * log_1mp) * log_p
        neg = torch.exp(self.gamma * log_p) * log_1mp
        if self.alpha is not None:
            pos, neg = self.alpha * pos, (1.0 - self.alpha) * neg
        return -(t * pos + (1.0 - t) * neg).sum(dim=1)
