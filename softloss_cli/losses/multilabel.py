"""Multi-label losses: is each category present? Softmax against sigmoids.

A softmax sums to 1, so it cannot say "two objects" or "none"; per-category sigmoids can.
Every loss here takes logits ``[B, C]`` and float multi-hot targets ``[B, C]`` (values in
[0, 1]; soft targets work too) and returns the batch mean of a per-sample loss.

Choice shared by the sigmoid losses (``bce``, ``asl``, ``focal``): the per-sample loss is
the **sum** over the C categories, as in the ASL paper and timm's ``AsymmetricLossMultiLabel``
(arXiv 2009.14119), not the mean over all B x C entries that ``nn.BCEWithLogitsLoss()``
uses: ours is ``C`` times PyTorch's default, which keeps the loss on the scale of the
softmax CE (also a sum over classes) so that one learning rate suits all four.

Everything is computed in float32 with autocast off, from ``softplus``/``logsigmoid`` forms
(never ``log`` of an underflowed sigmoid), so the losses are finite for logits of any size.

Cost. Each loss computes its per-sample values and, with them, its gradient in closed form
(``base.row_loss``): backward is one multiply instead of one autograd node per tensor op.
Eagerly, ``asl`` and ``focal`` cost 2-5x ``ce`` (a sigmoid, a log and a dozen elementwise
products per entry, each a pass over B x C); the fused path (``losses/fused.py``) compiles
each row function into one loop over the logits, which brings them near ``ce``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softloss_cli.losses import fused, kernels
from softloss_cli.losses.base import (
    LOSSES,
    ClassificationLoss,
    SoftmaxLoss,
    float32_region,
    reduce_loss,
    row_loss,
)

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
        with float32_region(logits.device.type):
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
        return row_loss(softmax_ml_rows, logits, target.to(logits.dtype), self.empty == "uniform")[0]


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
        if pos_weight is None:
            return row_loss(bce_rows, logits, target.to(logits.dtype))[0]
        return F.binary_cross_entropy_with_logits(
            logits, target.float(), pos_weight=pos_weight, reduction="none"
        ).sum(dim=1)


def softmax_ml_rows(z: torch.Tensor, t: torch.Tensor, uniform: bool, want_grad: bool = True):
    """``-sum_c q_c log softmax(z)_c`` per row, ``q = t / sum t`` (``1/C`` or 0 on empty rows).

    ``z`` (detached), ``t``: ``[B, C]``; returns ``(values [B], grad [B, C] or None)``, the
    gradient in closed form: ``softmax(z) * sum_c q_c - q``.
    """
    c = z.shape[1]
    log_p = torch.log_softmax(z, dim=1)
    total = t.sum(dim=1)
    filled = total > 0
    inv = 1.0 / total.clamp_min(torch.finfo(z.dtype).tiny)  # 0/0 never happens; empty rows below
    values = -torch.linalg.vecdot(t, log_p) * inv
    if uniform:
        values = torch.where(filled, values, -log_p.sum(dim=1) / c)
    grad = None
    if want_grad:
        # q = t * inv (+ 1/C on empty rows); grad = p * sum(q) - q.
        q_sum = filled.to(z.dtype) if not uniform else torch.ones_like(total)
        fill = torch.where(filled, torch.zeros_like(total), torch.full_like(total, 1.0 / c)) if uniform else None
        grad = log_p.exp_().mul_(q_sum[:, None])
        grad.addcmul_(t, inv[:, None], value=-1.0)
        if fill is not None:
            grad.sub_(fill[:, None])
    return values, grad


@fused.kernel_of(softmax_ml_rows)
def softmax_ml_rows_kernel(z: torch.Tensor, t: torch.Tensor, uniform: bool, want_grad: bool = True):
    """``softmax_ml_rows`` on the CPU kernel of ``ordinal.kl_rows`` in its normalised form (the
    CE to ``t / sum t``, each row's sum taken in the kernel; a row without a positive gets 0,
    or with ``uniform`` its CE to ``1/C``)."""
    return kernels.values_and_grad("kl_rows", z, None, t, None, None, bool(uniform), z.shape[0], want_grad=want_grad)


def bce_rows(z: torch.Tensor, t: torch.Tensor, want_grad: bool = True):
    """``sum_c [softplus(z_c) - t_c z_c]`` per row: BCE with logits summed over categories.

    ``z`` (detached), ``t``: ``[B, C]``; returns ``(values [B], grad [B, C] or None)``. Each
    entry is ``softplus(z) - t z`` (exactly 0 for a saturated right answer); gradient in closed
    form: ``sigmoid(z) - t``.
    """
    values = F.softplus(z).addcmul_(t, z, value=-1.0).sum(dim=1)
    grad = torch.sigmoid(z).sub_(t) if want_grad else None
    return values, grad


@fused.kernel_of(bce_rows)
def bce_rows_kernel(z: torch.Tensor, t: torch.Tensor, want_grad: bool = True):
    """``bce_rows`` as one CPU kernel (``cpu_kernels.cpp``): one exponential per entry."""
    return _elementwise_kernel("bce_rows", z, t, (), want_grad)


def _elementwise_kernel(name: str, z: torch.Tensor, t: torch.Tensor, params: tuple, want_grad: bool):
    """Launch a kernel of the ``(z, t, *params, C, rows, values, grad)`` form on float32 ``[B, C]``."""
    z = z.float().contiguous()
    t = t.float().contiguous()
    if t.shape != z.shape:
        raise ValueError(f"targets {tuple(t.shape)} must be shaped like the logits {tuple(z.shape)}")
    b, c = z.shape
    values = z.new_empty(b)
    grad = torch.empty_like(z) if want_grad else None
    kernels.launch(name, b, z, t, *params, c, kernels.ROWS, values, grad, elements_per_row=c)
    return values, grad


def softplus_sigmoid(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softplus(z), sigmoid(z))`` from one ``exp(-|z|)``: ``max(z, 0) + log1p(e)`` and
    ``1 / (1 + e)`` (``z >= 0``) or ``e / (1 + e)``; finite for any ``z``."""
    e = torch.exp(-z.abs())
    inv = 1.0 / (1.0 + e)
    return z.clamp_min(0.0) + torch.log1p(e), torch.where(z >= 0, inv, e * inv)


@fused.variant_of(bce_rows)
def bce_rows_fused(z: torch.Tensor, t: torch.Tensor, want_grad: bool = True):
    """``bce_rows`` for the compiled path: softplus and sigmoid from one exponential per entry."""
    sp, s = softplus_sigmoid(z)
    values = (sp - t * z).sum(dim=1)
    return values, (s - t if want_grad else None)


def _log_sigmoid(z: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
    """``log sigmoid(z)``, finite for any ``z``: ``log(sigmoid(z))`` where the sigmoid is a normal
    float, else ``z`` (the two agree to float precision below ``z = -69``; ``s``: ``sigmoid(z)``
    when the caller has it); cheaper than
    ``F.logsigmoid`` on CPU, absolute error ~1e-7 (``z`` large: ``log(1 - tiny)`` rounds to 0).
    """
    out = torch.sigmoid(z).clamp_min_(1e-30) if s is None else s.clamp_min(1e-30)
    return torch.minimum(out.log_(), z, out=out)


def _int_pow(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """``base ** exponent`` (a new tensor) by repeated products for integer exponents 1..8
    (``pow`` is several times slower on CPU), else ``_safe_pow``."""
    if exponent == 0:
        return torch.ones_like(base)
    if exponent == int(exponent) and 1 <= exponent <= 8:
        n = int(exponent)
        if n == 1:
            return base.clone()
        out = base * base
        for _ in range(n - 2):
            out.mul_(base)
        return out
    return _safe_pow(base, exponent)


def focal_rows(z: torch.Tensor, t: torch.Tensor, gamma: float, a_pos: float, a_neg: float, want_grad: bool = True):
    """Binary focal loss summed over categories, and its closed-form gradient divided by -1:
    ``(values [B], grad [B, C] or None)`` for detached ``z`` and ``t [B, C]``.

    ``-sum_c [a_pos t (1-s)^g log s + a_neg (1-t) s^g log(1-s)]``, ``s = sigmoid(z)``.
    With ``P = (1-s)^g log s`` and ``N = s^g log(1-s)``:
    ``dP/dz = (1-s)^g ((1-s) - g s log s)``, ``dN/dz = s^g (g (1-s) log(1-s) - s)``.
    Written in place on six ``[B, C]`` buffers (each fresh buffer costs page faults on CPU).
    """
    zd = z
    s = torch.sigmoid(zd)
    sn = torch.rsub(s, 1.0)
    ls = _log_sigmoid(zd, s)  # becomes P
    lns = torch.sub(ls, zd)  # log(1 - s) = log s - z; becomes N
    grad_wanted = want_grad
    w = _int_pow(sn, gamma)  # (1 - s)^g, then s^g
    d_pos = None
    if grad_wanted:
        d_pos = torch.mul(s, ls).mul_(-gamma).add_(sn).mul_(w)
        if a_pos != 1.0:
            d_pos.mul_(a_pos)
    pos = ls.mul_(w)
    if a_pos != 1.0:
        pos.mul_(a_pos)
    if gamma == 2.0:
        w = torch.mul(s, s, out=w)
    else:
        w = _int_pow(s, gamma)
    d_neg = sn.mul_(lns).mul_(gamma).sub_(s).mul_(w) if grad_wanted else None
    neg = lns.mul_(w)
    if a_neg != 1.0:
        neg.mul_(a_neg)
        if d_neg is not None:
            d_neg.mul_(a_neg)
    # -(t pos + (1 - t) neg) = -(neg + t (pos - neg))
    values = -(neg.sum(dim=1) + pos.sub_(neg).mul_(t).sum(dim=1))
    grad = d_pos.sub_(d_neg).mul_(t).add_(d_neg) if grad_wanted else None  # d_neg + t (d_pos - d_neg)
    return values, grad


@fused.kernel_of(focal_rows)
def focal_rows_kernel(z: torch.Tensor, t: torch.Tensor, gamma: float, a_pos: float, a_neg: float,
                      want_grad: bool = True):
    """``focal_rows`` as one CPU kernel (``cpu_kernels.cpp``); ``log s`` and ``log(1 - s)`` exact
    (``-softplus(-z)``, ``-softplus(z)``) instead of the eager path's clamped logarithm."""
    return _elementwise_kernel("focal_rows", z, t, (float(gamma), float(a_pos), float(a_neg)), want_grad)


def asl_rows(z: torch.Tensor, t: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float,
             detach_weights: bool, want_grad: bool = True):
    """Asymmetric loss summed over categories, and its closed-form gradient divided by -1:
    ``(values [B], grad [B, C] or None)`` for detached ``z`` and ``t [B, C]``.

    ``-sum_c [t (1-s)^gp log s + (1-t) p_m^gn log(1 - p_m)]``, ``p_m = max(s - m, 0)``.
    ``d/dz [(1-s)^gp log s] = (1-s)^gp ((1-s) - gp s log s)``;
    ``d/dz [p_m^gn log(1-p_m)] = s (1-s) [gn p_m^(gn-1) log(1-p_m) - p_m^gn / (1-p_m)]`` where
    ``s > m``, else 0 (without clipping, ``s^gn (gn (1-s) log(1-s) - s)``).
    ``detach_weights``: the weights ``(1-s)^gp``, ``p_m^gn`` are constants. Written in place
    on few ``[B, C]`` buffers (each fresh buffer costs page faults on CPU).
    """
    zd = z
    s = torch.sigmoid(zd)
    sn = torch.rsub(s, 1.0)
    ls = _log_sigmoid(zd, s)  # becomes pos - neg
    if clip > 0:
        pm = (s - clip).clamp_min_(0.0)
        one_m = torch.rsub(s, 1.0 + clip).clamp_max_(1.0)  # 1 - p_m = min(1, (1 - s) + m)
        log_one_m = torch.log(one_m)
    else:
        pm, one_m, log_one_m = s, sn, ls - zd
    grad_wanted = want_grad
    d_pos = None
    if grad_wanted:
        if gamma_pos == 0:
            d_pos = sn if clip > 0 else sn.clone()  # with clip, sn is only read again (dpm) before d_pos changes
        elif detach_weights:
            d_pos = _int_pow(sn, gamma_pos).mul_(sn)
        else:
            d_pos = torch.mul(s, ls).mul_(-gamma_pos).add_(sn).mul_(_int_pow(sn, gamma_pos))
    pos = ls if gamma_pos == 0 else ls.mul_(_int_pow(sn, gamma_pos))
    # p_m^(gn-1) (gradient only) and p_m^gn; for 0 < gn < 1 the former is 0 where p_m = 0
    # (its infinite value there multiplies terms that are 0).
    w_m1 = None
    if grad_wanted and not detach_weights and gamma_neg != 0 and clip > 0:
        if gamma_neg >= 1:
            w_m1 = _int_pow(pm, gamma_neg - 1.0)
        else:
            w_m1 = torch.where(pm > 0, pm.clamp_min(torch.finfo(pm.dtype).tiny).pow(gamma_neg - 1.0),
                               torch.zeros_like(pm))
    w_neg = pm.mul_(w_m1) if w_m1 is not None and gamma_neg >= 1 else _int_pow(pm, gamma_neg)
    d_neg = None
    if grad_wanted:
        if clip == 0:  # the focal form: no division by 1 - s, which rounds to 0 for large z
            d_neg = -s * w_neg if detach_weights or gamma_neg == 0 else (
                torch.mul(sn, log_one_m).mul_(gamma_neg).sub_(s).mul_(w_neg))
        else:
            dpm = s.mul_(sn)  # d p_m / dz = s (1 - s) where s > m; s is not needed below
            if w_m1 is None:  # -w p_m' / (1 - p_m); p_m' = 0 below the margin, where gn = 0 gives w = 1
                d_neg = dpm.mul_(w_neg).div_(one_m).neg_()
                if gamma_neg == 0:
                    d_neg.mul_(pm > 0)
            else:
                d_neg = w_m1.mul_(log_one_m).mul_(gamma_neg).sub_(torch.div(w_neg, one_m, out=one_m)).mul_(dpm)
    neg = log_one_m.mul_(w_neg)
    values = -(neg.sum(dim=1) + pos.sub_(neg).mul_(t).sum(dim=1))
    grad = d_pos.sub_(d_neg).mul_(t).add_(d_neg) if grad_wanted else None  # d_neg + t (d_pos - d_neg)
    return values, grad


@fused.kernel_of(asl_rows)
def asl_rows_kernel(z: torch.Tensor, t: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float,
                    detach_weights: bool, want_grad: bool = True):
    """``asl_rows`` as one CPU kernel (``cpu_kernels.cpp``)."""
    params = (float(gamma_neg), float(gamma_pos), float(clip), bool(detach_weights))
    return _elementwise_kernel("asl_rows", z, t, params, want_grad)


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

    Numerics (our choices): ``log p`` is ``log sigmoid(z)`` in a form finite for any z
    (``_log_sigmoid``); ``log(1 - p_m) = log(min(1, (1 - p) + m))`` (never ``log 0`` when
    m > 0; ``log p - z`` when m = 0); the weights are plain products (integer gammas) or
    powers, and the gradient is written in closed form (``asl_rows``), so no derivative of
    a power at 0 can turn into NaN. The authors' code adds ``eps = 1e-8`` inside the logs
    instead; here no eps is needed.

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
        return row_loss(asl_rows, logits, target.to(logits.dtype), self.gamma_neg, self.gamma_pos, self.clip,
                        self.detach_weights, scale=-1.0)[0]


@LOSSES.register("focal", "binary focal loss per category (Lin et al. 2017)")
class FocalLoss(SigmoidLoss):
    """Binary (sigmoid) focal loss per category (Lin et al. 2017, "Focal Loss for Dense
    Object Detection", arXiv 1708.02002), summed over categories.

        ``loss_i = -sum_c [ a y_ic (1 - p_ic)^gamma log p_ic
                            + (1 - a) (1 - y_ic) p_ic^gamma log(1 - p_ic) ]``

    with ``p = sigmoid(z)``; ``log p`` is ``_log_sigmoid(z)`` and ``log(1 - p) = log p - z``,
    finite for any logit; the weights ``(1 - p)^g``, ``p^g`` are products (integer g) or
    powers, and the gradient is in closed form (``focal_rows``).

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
        a_pos, a_neg = (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)
        return row_loss(focal_rows, logits, target.to(logits.dtype), self.gamma, a_pos, a_neg, scale=-1.0)[0]
