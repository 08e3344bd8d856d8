"""Learning from negative labels: some training samples only say "the answer is not l".

Targets follow the ``partial`` task contract (tasks.py): int64 ``[B, 2]`` rows
``(label, is_positive)``. A positive row (``is_positive = 1``) is an ordinary class index; a
negative row (``is_positive = 0``) names one class the sample is NOT.

- ``nl``: cross-entropy on positives and ``-log(1 - p_l)`` on negatives (negative learning,
  Kim et al. 2019, https://arxiv.org/abs/1908.07387; complementary labels, Ishida et al.
  2017, https://arxiv.org/abs/1705.07541). Bounded below by 0 and minimised by moving
  the mass off ``l``, wherever it goes.
- ``negated_ce``: cross-entropy on positives and ``-CE`` (``+log p_l``) on negatives: the
  naive "negate the gradient" idea. ``log p_l -> -inf`` as ``p_l -> 0``, so the loss has
  no lower bound and training drives the logits apart until they overflow: the cautionary
  baseline (a run usually ends as "diverged").
- ``positives_only``: cross-entropy on the positives, negatives dropped: the baseline to beat.

All are computed in float32 with autocast off (``SoftmaxLoss.forward``), from
``logsumexp`` so that they stay finite for any finite logits where the true value is
finite (``p_l`` rounding to 1 in float32 does not make ``-log(1 - p_l)`` infinite).

Cost: ``nl`` computes its values and closed-form gradient from one ``log_softmax`` and its
``exp`` (``nl_rows``; ``nl_rows_fused`` is the compiled path's form, one pass per reduction
on CUDA; on the CPU the eager form measured faster); ``negated_ce`` is one fused
``cross_entropy`` times a per-row sign.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softloss_cli.losses import fused, kernels
from softloss_cli.losses.base import (
    LOSSES,
    SoftmaxLoss,
    float32_region,
    log1m_softmax_at,
    needs_grad,
    scaled_float,
    with_grad,
)

__all__ = [
    "NegatedCrossEntropyLoss",
    "NegativeLearningLoss",
    "PartialLoss",
    "PositivesOnlyLoss",
    "negative_log_complement",
    "split_partial_targets",
]


def split_partial_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(label int64 [B], positive bool [B])`` from partial targets ``[B, 2]`` = (label, is_positive).

    Shape checks only (no host sync); label ranges are checked once by the data loader.
    """
    if target.ndim != 2 or target.shape[1] != 2:
        raise ValueError(
            f"partial targets must be [B, 2] rows (label, is_positive), got shape {tuple(target.shape)}; "
            "use data.negatives.fraction > 0 to build them"
        )
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"partial targets must be an integer tensor, got dtype {target.dtype}")
    return target[:, 0].long(), target[:, 1] != 0


def negative_log_complement(
    logits: torch.Tensor, label: torch.Tensor, lse: torch.Tensor | None = None
) -> torch.Tensor:
    """``-log(1 - p_l)`` per sample, ``p = softmax(logits)``, computed stably.

    ``1 - p_l = sum_{k != l} p_k``, so
    ``-log(1 - p_l) = logsumexp_k z_k - logsumexp_{k != l} z_k``: the class ``l`` is masked
    with ``-inf`` before the second ``logsumexp``. Exact where the naive
    ``-log(1 - softmax(z)_l)`` rounds ``p_l`` to 1 and returns inf: for ``z = (1e4, 0, 0)``
    and ``l = 0`` it gives ``1e4 - log 2``. Needs ``C >= 2`` (with one class ``p_l = 1``
    and the value is +inf).

    Args:
        logits: ``[B, C]`` float logits (use float32: the caller casts).
        label: ``[B]`` int64 class indices.
        lse: ``logsumexp(logits, -1)`` when the caller has it already.

    Returns ``[B]`` values >= 0 in ``logits``' dtype.
    """
    if lse is None:
        lse = torch.logsumexp(logits, dim=-1)
    forbidden = F.one_hot(label, logits.shape[-1]).bool()
    return lse - torch.logsumexp(logits.masked_fill(forbidden, float("-inf")), dim=-1)


@fused.eager_on_cpu
def nl_rows(z: torch.Tensor, label: torch.Tensor, positive: torch.Tensor, neg_weight: float, want_grad: bool = True,
            all_rows: bool | None = None):
    """NL per row: ``-log p_l`` where ``positive``, else ``w * -log(1 - p_l)``, and its gradient.

    ``z [B, C]`` detached, ``label [B]``, ``positive [B]`` bool. Returns ``(total [B], grad [B, C]
    or None, ce [B], neg [B])``. ``log(1 - p_l)`` comes from ``base.log1m_softmax_at`` (exact for
    any logits; ``all_rows`` as there). Gradient: positive rows ``p - onehot``; negative rows
    ``w * (p_l * onehot - p_l p_k / (1 - p_l) for k != l)``.
    """
    idx = label[:, None]
    log_p = torch.log_softmax(z, dim=1)
    ce = -log_p.gather(1, idx).squeeze(1)
    p = log_p.exp()
    log1m, rest, need, rows, v = log1m_softmax_at(log_p, p, label, all_rows)
    neg = -log1m
    total = torch.where(positive, ce, neg_weight * neg)
    grad = None
    if want_grad:
        p_l = p.gather(1, idx).squeeze(1)
        pos_scale = positive.to(p.dtype)
        wp_l = -neg_weight * p_l
        if rows is None and v is not None:  # every row: p_k / (1 - p_l) from the log domain where 1 - p_l underflowed
            ratio = torch.where(need[:, None], v, p / rest.clamp_min(torch.finfo(p.dtype).tiny)[:, None])
            grad = torch.where(positive[:, None], p, ratio * wp_l[:, None])
        else:
            scale = torch.where(positive, pos_scale, wp_l / rest.clamp_min(torch.finfo(p.dtype).tiny))
            grad = p.mul_(scale[:, None])
            if v is not None:  # negative rows whose 1 - p_l underflowed, from the log domain
                fixed = v.mul_(wp_l.index_select(0, rows)[:, None])
                keep = (need & ~positive).index_select(0, rows)[:, None]
                grad.index_copy_(0, rows, torch.where(keep, fixed, grad.index_select(0, rows)))
        grad.scatter_(1, idx, torch.where(positive, p_l - 1.0, neg_weight * p_l)[:, None])
    return total, grad, ce, neg


@fused.variant_of(nl_rows)
def nl_rows_fused(z: torch.Tensor, label: torch.Tensor, positive: torch.Tensor, neg_weight: float,
                  want_grad: bool = True, all_rows: bool | None = None):
    """``nl_rows`` for the compiled path: the same outputs, written with masks and row reductions.

    ``-log(1 - p_l)`` is ``-log1p(-p_l)`` where ``p_l <= 1/2`` and ``lse - lse_{k != l}`` above
    (``lse_{k != l}`` with its own max: exact where ``1 - p_l`` underflows). The negative rows'
    gradient is ``w (p_k - q_k)`` off ``l`` and ``w p_l`` at it, with ``q_k = p_k / (1 - p_l) =
    exp(z_k - lse_{k != l})``; ``p_k - q_k = -p_k p_l / (1 - p_l)`` where ``p_l <= 1/2``.
    """
    is_l = torch.arange(z.shape[1], device=z.device)[None, :] == label[:, None]
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    rest = z.masked_fill(is_l, float("-inf"))
    lse_rest = torch.logsumexp(rest, dim=1, keepdim=True)
    log_p_l = z.gather(1, label[:, None]) - lse
    p_l = log_p_l.exp()
    small = p_l <= 0.5
    ce = -log_p_l.squeeze(1)
    neg = torch.where(small, -torch.log1p(-p_l.clamp_max(0.5)), lse - lse_rest).squeeze(1)
    total = torch.where(positive, ce, neg_weight * neg)
    grad = None
    if want_grad:
        p = (z - lse).exp()
        off = torch.where(small, p * (-p_l / (1.0 - p_l.clamp_max(0.5))), p - (rest - lse_rest).exp())
        grad_neg = neg_weight * torch.where(is_l, p_l, off)
        grad = torch.where(positive[:, None], p - is_l.to(p.dtype), grad_neg)
    return total, grad, ce, neg


@fused.kernel_of(nl_rows)
def nl_rows_kernel(z: torch.Tensor, label: torch.Tensor, positive: torch.Tensor, neg_weight: float,
                   want_grad: bool = True, all_rows: bool | None = None):
    """``nl_rows`` as one CPU kernel (``cpu_kernels.cpp``); ``all_rows`` does not apply."""
    z = z.float().contiguous()
    b, c = z.shape
    label = kernels.index(label)
    positive = positive.to(torch.bool).contiguous().view(torch.uint8)
    total, ce, neg = z.new_empty(b), z.new_empty(b), z.new_empty(b)
    grad = torch.empty_like(z) if want_grad else None
    kernels.launch("nl_rows", b, z, label, positive, float(neg_weight), c, kernels.ROWS, total, ce, neg, grad,
                   elements_per_row=c,
                   labels=(label, c, "label"))
    return total, grad, ce, neg


def _side_mean(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B]`` over the rows where ``rows [B]`` (bool) holds; 0 for none. No host sync."""
    keep = rows.to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp_min(1.0)


class PartialLoss(SoftmaxLoss):
    """Base of the negative-label losses: targets ``[B, 2]`` = (label, is_positive).

    Subclasses give ``negative_term`` per sample (or override ``rows``); ``rows`` picks CE
    or the weighted negative term per row and ``per_sample`` applies ``normalize``. ``last_parts`` adds ``pos_ce`` (mean CE over the batch's positives)
    and ``neg_term`` (mean negative term over its negatives; 0 when a batch has none), so
    TensorBoard shows which side drives the loss (``train/neg_term`` falling without bound
    is the divergence of ``negated_ce``).

    Args:
        neg_weight: weight ``w >= 0`` of the negative term.
        normalize: what the ``'mean'`` reduction divides the batch's sum by:
            ``'positives'`` (default) the number of positive samples in the batch (at least 1),
            ``'batch'`` the batch size. Our choice of default: with ``'positives'`` the CE
            term weighs the same per positive sample as in ``positives_only``, whatever the
            negative fraction, so ``neg_weight=0`` *is* ``positives_only`` and a comparison
            of the two measures what the negatives add, not a smaller effective learning
            rate on the positives. ``'batch'`` is the plain mean (NLNL's form).
        logit_scale, penalty, penalty_weight, penalty_on, balance_weight, reduction: see
            ``SoftmaxLoss`` (the penalty is a mean over every sample of the batch).
    """

    task_kinds = ("partial",)
    NORMALIZERS = ("positives", "batch")

    def __init__(self, neg_weight: float = 1.0, normalize: str = "positives", **kwargs):
        super().__init__(**kwargs)
        if not neg_weight >= 0:
            raise ValueError(f"neg_weight must be >= 0, got {neg_weight}")
        if normalize not in self.NORMALIZERS:
            raise ValueError(f"normalize must be one of {', '.join(self.NORMALIZERS)}, got {normalize!r}")
        self.neg_weight = float(neg_weight)
        self.normalize = normalize
        self._terms: tuple[torch.Tensor, ...] | None = None

    def negative_term(self, logits: torch.Tensor, label: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rows(self, logits: torch.Tensor, label: torch.Tensor, positive: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Per-sample values ``[B]`` times ``scale``: CE on positive rows, ``w * negative_term`` on the others."""
        lse = torch.logsumexp(logits, dim=-1)
        ce = lse - logits.gather(1, label[:, None]).squeeze(1)  # -log p_label, same as cross_entropy
        neg = self.negative_term(logits, label, lse)
        self._terms = (positive, ce.detach(), neg.detach())
        # Both branches are finite with finite gradients for finite logits, so torch.where
        # (which still differentiates the branch it does not pick, times 0) stays NaN-free.
        values = torch.where(positive, ce, self.neg_weight * neg)
        return values if scale == 1.0 else values * scale

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        label, positive = split_partial_targets(target)
        if not (self.normalize == "positives" and self.reduction == "mean"):
            return self.rows(logits, label, positive)
        # Scaled so that the batch mean becomes sum / #positives. On the CPU the factor is read
        # as a number (no device to wait for) and goes into the rows' own values and gradient:
        # no tensor ops for it, and backward keeps the one-multiply path of a plain batch mean.
        # Elsewhere it stays a tensor (no host sync).
        if logits.device.type == "cpu" and not torch.compiler.is_compiling():
            return self.rows(logits, label, positive, scale=positive.numel() / max(int(positive.sum()), 1))
        values = self.rows(logits, label, positive)
        return values * (positive.numel() / positive.sum().to(values.dtype).clamp_min(1.0))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        loss = super().forward(logits, target, **aux)
        positive, ce, neg = self._terms
        self.last_parts.later("pos_ce", lambda: _side_mean(ce, positive))
        self.last_parts.later("neg_term", lambda: _side_mean(neg, ~positive))
        self._terms = None
        return loss


@LOSSES.register("nl", "CE on positives + -log(1 - p_l) on negative labels (stable, bounded)")
class NegativeLearningLoss(PartialLoss):
    """Cross-entropy on positives, ``w * -log(1 - p_l)`` on negatives ("not l").

    ``loss_i = -log p_{y_i}`` if sample i is positive, else ``w * -log(1 - p_{l_i})``,
    summed and divided by the number of positives in the batch (``normalize='positives'``,
    default) or by the batch size (``normalize='batch'``), with
    ``p = softmax(alpha * z)`` and ``-log(1 - p_l) = logsumexp_k z_k - logsumexp_{k != l} z_k``
    (``negative_log_complement``). Negative learning: Kim et al. 2019, NLNL
    (https://arxiv.org/abs/1908.07387); complementary-label learning: Ishida et al. 2017
    (https://arxiv.org/abs/1705.07541). Both terms are >= 0, so the loss is bounded below
    and its gradient on a negative row, ``p_l / (1 - p_l) * (p_k - 1[k = l])``-shaped,
    vanishes as ``p_l -> 0``.

    Args:
        neg_weight: ``w``, weight of the negative term (default 1).
        normalize: ``'positives'`` (default) | ``'batch'``; see ``PartialLoss``.
        logit_scale, penalty, penalty_weight, penalty_on: see ``SoftmaxLoss``.
        reduction: ``'mean'`` (default; divided as ``normalize`` says) | ``'sum'`` | ``'none'``.

    Shapes: logits ``[B, C]`` (C >= 2), target int64 ``[B, 2]`` = (label, is_positive);
    returns a scalar.
    """

    # Measured with configs/experiment/negatives*.yaml without clipping (docs/negatives.md).
    clip_advice = ("with SGD at lr 0.05, one seed in three collapsed to a constant prediction in its first epoch "
                   "on digits and ordinal_images")

    def negative_term(self, logits, label, lse):
        return negative_log_complement(logits, label, lse)

    def rows(self, logits: torch.Tensor, label: torch.Tensor, positive: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        total, grad, ce, neg = fused.call(nl_rows, logits.detach(), label, positive, self.neg_weight,
                                          want_grad=needs_grad(logits))
        self._terms = (positive, ce, neg)
        return with_grad(logits, total if scale == 1.0 else total * scale, grad, scale)


@LOSSES.register("negated_ce", "CE on positives, -CE on negatives: unbounded, diverges (cautionary baseline)")
class NegatedCrossEntropyLoss(PartialLoss):
    """Cross-entropy on positives, its negation ``-w * CE = w * log p_l`` on negatives.

    The naive way to "push the prediction away from l": flip the sign of the CE gradient.
    ``log p_l`` has no lower bound, and its gradient ``d log p_l / d z_k = 1[k = l] - p_k``
    does not vanish as ``p_l -> 0`` (``z_l`` keeps being pushed down at rate ``1 - p_l -> 1``),
    so minimising it grows the logit gaps for ever: the loss heads to ``-inf`` and the
    weights towards overflow.
    Kept as the cautionary baseline of DESIGN.md's negatives scenario; a run that goes
    non-finite ends as "diverged" (exit code 3, ``status.json``).

    Each value is finite for finite logits (``log p_l = z_l - logsumexp z``, never
    ``log`` of an underflowed probability).

    Args:
        neg_weight: ``w`` (default 1).
        normalize, logit_scale, penalty, penalty_weight, penalty_on, reduction: see
            ``NegativeLearningLoss``.

    Shapes: logits ``[B, C]``, target int64 ``[B, 2]``; returns a scalar.
    """

    def negative_term(self, logits, label, lse):
        return logits.gather(1, label[:, None]).squeeze(1) - lse  # log p_l = -CE

    def rows(self, logits: torch.Tensor, label: torch.Tensor, positive: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        # One fused cross-entropy for both sides: the negative term is -w * CE.
        ce = F.cross_entropy(logits, label, reduction="none")
        detached = ce.detach()
        self._terms = (positive, detached, -detached)
        sign = torch.where(positive, scale, -self.neg_weight * scale)
        return ce * sign


@LOSSES.register("positives_only", "CE on the positive samples only; negative labels are dropped (baseline)")
class PositivesOnlyLoss(PartialLoss):
    """Cross-entropy on the positive rows; negative rows are dropped.

    ``loss = (1 / |P|) sum_{i in P} -log p_{y_i}`` over the batch's positives ``P``: the same
    as training plain CE on the positive subset. Our choice: the ``'mean'`` reduction
    divides by the number of positives, not by the batch size, so that the effective
    learning rate does not shrink with the negative fraction (which would handicap the
    baseline); a batch without positives gives 0. ``'sum'`` sums over positives;
    ``'none'`` gives 0 on negative rows. A penalty, if any, is averaged over the positives too.

    Args:
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.

    Shapes: logits ``[B, C]``, target int64 ``[B, 2]``; returns a scalar.
    """

    def __init__(self, **kwargs):
        kwargs.pop("neg_weight", None)  # accepted for a uniform config interface, unused
        kwargs.pop("normalize", None)  # always the positives: the definition of this loss
        super().__init__(neg_weight=0.0, normalize="positives", **kwargs)

    def negative_term(self, logits, label, lse):
        return torch.zeros_like(lse)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        label, positive = split_partial_targets(target)
        # float32 with autocast off, as SoftmaxLoss.forward: low-precision log-probs underflow.
        with float32_region(logits.device.type):
            z = scaled_float(logits, self.logit_scale)
            keep = positive.to(z.dtype)
            count = keep.sum().clamp_min(1.0)

            def reduce(values: torch.Tensor) -> torch.Tensor:
                values = values * keep
                if self.reduction == "mean":
                    return values.sum() / count
                return values.sum() if self.reduction == "sum" else values

            ce = F.cross_entropy(z, label, reduction="none")
            main = reduce(ce)
            parts = {"main": main.detach(), "pos_ce": ((ce * keep).sum() / count).detach()}
            loss = self.add_regularisers(main, z, aux, reduce, parts)
        self.last_parts = parts
        return loss
