"""Losses on the weighted kappa and on per-class squared errors (dlordinal's WKLoss, MCELoss,
MCEAndWKLoss).

* ``wk`` (de la Torre, Puig & Valls, "Weighted kappa loss function for multi-class
  classification of ordinal data in deep learning", Pattern Recognition Letters 2018; in the
  [0, 2] form of Vargas et al., Neurocomputing 2020): one minus a *soft* quadratic weighted
  kappa of the batch, with the softmax probabilities as soft predictions.
* ``mce``: the mean over classes of the per-class mean squared error of the probabilities
  (Vargas et al.), i.e. the multiclass Brier score divided by C.
* ``mce_wk``: ``wk_weight * wk + (1 - wk_weight) * mce``, the combination of Vargas et al. that
  keeps the kappa from leaving classes out of the predictions.

``wk`` and ``mce_wk`` are batch-level losses (a ratio of sums over the batch, not a mean of
per-sample values): only ``reduction='mean'`` is accepted. All three work on
``p = softmax(logit_scale * z)``, so the confidence ``penalty`` of ``SoftmaxLoss`` applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from softloss_cli.losses import fused, kernels
from softloss_cli.losses.base import (
    LOSSES,
    SoftmaxLoss,
    float32_region,
    needs_grad,
    reduce_loss,
    row_loss,
    scaled_float,
    with_grad,
)

__all__ = ["WeightedKappaLoss", "MeanClassErrorLoss", "MceWkLoss", "kappa_weights"]

PENALIZATIONS = ("quadratic", "linear")


def kappa_weights(num_classes: int, penalization: str = "quadratic", class_weights=None,
                  device=None, dtype=torch.float32) -> torch.Tensor:
    """``W [C, C]``: ``W[i, j] = (|i - j| / (C - 1))^2`` (quadratic) or ``|i - j| / (C - 1)`` (linear),
    times ``class_weights[j]`` (the true class j) when given; rows index the predicted class."""
    if penalization not in PENALIZATIONS:
        raise ValueError(f"penalization must be one of {', '.join(PENALIZATIONS)}, got {penalization!r}")
    k = torch.arange(num_classes, device=device, dtype=torch.float64)
    d = (k[:, None] - k[None, :]).abs() / max(num_classes - 1, 1)
    w = d.square() if penalization == "quadratic" else d
    if class_weights is not None:
        w = w * torch.as_tensor(class_weights, dtype=torch.float64, device=device)[None, :]
    return w.to(dtype)


def _check_class_weights(class_weights) -> tuple[float, ...] | None:
    if class_weights is None:
        return None
    weights = tuple(float(w) for w in class_weights)
    if not all(w >= 0 for w in weights):
        raise ValueError(f"class_weights must be >= 0, got {list(weights)}")
    return weights


class _BatchLoss(SoftmaxLoss):
    """A softmax loss whose value is a function of the whole batch (no per-sample vector)."""

    task_kinds = ("ordinal", "multiclass")
    order_sensitive = True

    def __init__(self, reduction: str = "mean", **kwargs):
        if reduction != "mean":
            raise ValueError(f"loss={self.registry_name} is a batch-level loss: reduction must be 'mean', got {reduction!r}")
        super().__init__(reduction=reduction, **kwargs)
        self.penalization = "quadratic"
        self._w: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def weights(self, c: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, W transposed and contiguous)`` for ``c`` classes on ``device`` (cached)."""
        key = (torch.device(device), c)
        if key not in self._w:
            w = kappa_weights(c, self.penalization, self.class_weights, device)
            self._w[key] = (w, w.t().contiguous())
        return self._w[key]

    def batch_value(self, z: torch.Tensor, target: torch.Tensor, parts: dict) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        # float32 with autocast off, as every softmax loss (SoftmaxLoss.forward).
        with float32_region(logits.device.type):
            z = scaled_float(logits, self.logit_scale)  # no multiply (a pass, forward and backward) at scale 1
            aux32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in aux.items()}
            parts: dict[str, torch.Tensor] = {}
            main = self.batch_value(z, target, parts)
            parts["main"] = main.detach()
            loss = self.add_regularisers(main, z, aux32, lambda v: reduce_loss(v, "mean"), parts)
        self.last_parts = parts
        return loss


def _softmax_backward(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``dL/dz = p * (g - sum(p * g))`` for ``g = dL/dp`` and ``p = softmax(z)`` (one fused kernel)."""
    return torch.ops.aten._softmax_backward_data(g, p, 1, p.dtype)


def _wk_parts(p: torch.Tensor, target: torch.Tensor, w: torch.Tensor, epsilon: float, want_grad: bool):
    """``(WK, dWK/dp or None)`` of a batch: ``WK = O / (E + epsilon)`` with
    ``O = sum_b p_b . W[:, y_b]`` and ``E = (1/N) (sum_b p_b) . W n`` (n_j: count of label j).

    Gradient: ``dWK/dp_b = (W[:, y_b] - WK * m) / (E + epsilon)``, ``m = W n / N`` (one ``[C]``
    vector for the batch).
    """
    n, c = p.shape
    columns = w.t().index_select(0, target)  # W[:, y_b], [B, C]
    observed = torch.linalg.vecdot(p, columns).sum()
    m = w @ torch.bincount(target, minlength=c).to(p.dtype) / n
    denominator = p.sum(dim=0) @ m + epsilon
    ratio = observed / denominator
    grad = columns.sub_(ratio * m).div_(denominator) if want_grad else None
    return ratio, grad


def _mce_parts(p: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None, want_grad: bool):
    """``((1/C) sum_c w_c (p_c - 1[c = y])^2`` per row ``[B]``, its gradient w.r.t. ``p`` or None)."""
    c = p.shape[1]
    err = p.scatter_add(1, target[:, None], torch.full_like(p[:, :1], -1.0))
    weighted = err if class_weights is None else err * class_weights
    values = torch.linalg.vecdot(weighted, err) / c
    return values, (weighted.mul_(2.0 / c) if want_grad else None)


def mce_rows(z: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None, want_grad: bool = True):
    """MCE per row, ``(1/C) sum_c w_c (p_c - 1[c = y])^2`` with ``p = softmax(z)``, and its
    gradient w.r.t. ``z``: ``(values [B], grad [B, C] or None)`` for detached ``z``."""
    p = torch.softmax(z, dim=1)
    values, g = _mce_parts(p, target, class_weights, want_grad)
    return values, (None if g is None else _softmax_backward(g, p))


@fused.kernel_of(mce_rows)
def mce_rows_kernel(z: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None,
                    want_grad: bool = True):
    """``mce_rows`` as two CPU kernel passes (``cpu_kernels.cpp``: ``kappa_stats``, ``kappa_grad``)."""
    z = z.float().contiguous()
    b, c = z.shape
    target = kernels.index(target)
    cw = None if class_weights is None else class_weights.float().contiguous()
    p, values, pe = torch.empty_like(z), z.new_empty(b), z.new_empty(b)
    threads = kernels.threads_for(b, c)  # both passes over the same row blocks (p's layout)
    kernels.launch("kappa_stats", b, z, target, None, None, cw, c, kernels.ROWS, p, None, None, values, pe,
                   labels=(target, c, "target"), threads=threads)
    if not want_grad:
        return values, None
    kernels.launch("kappa_grad", b, p, target, None, None, 0.0, 0.0, 1.0, cw, None, None, pe, c, kernels.ROWS,
                   threads=threads)
    return values, p


def kappa_batch(z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, w_t: torch.Tensor,
                class_weights: torch.Tensor | None, mce_weight: float | None, epsilon: float, log: bool,
                want_grad: bool = True):
    """The batch kappa losses' value and gradient w.r.t. detached ``z``.

    ``K = WK`` (``_wk_parts``) or, with ``log``, ``log(WK + epsilon)``; with ``mce_weight`` (a
    float ``a``) the value is ``a K + (1 - a) mean_b MCE_b`` (``_mce_parts``; ``class_weights``
    ``[C]`` or None), without it ``K``. ``w`` is ``W [C, C]``, ``w_t`` its transpose (contiguous,
    for the kernel). Returns ``(value, grad [B, C] or None, WK, mean MCE or None)``, 0-d tensors.
    """
    p = torch.softmax(z, dim=1)
    ratio, g = _wk_parts(p, target, w, epsilon, want_grad)
    value = torch.log(ratio + epsilon) if log else ratio
    if log and g is not None:  # d log(WK + eps) = dWK / (WK + eps)
        g = g.div_(ratio + epsilon)
    mce = None
    if mce_weight is not None:
        mce_values, g_mce = _mce_parts(p, target, class_weights, want_grad)
        mce = mce_values.mean()
        value = mce_weight * value + (1.0 - mce_weight) * mce
        if g is not None:  # the MCE mean spreads 1/N over the rows
            g = g.mul_(mce_weight).add_(g_mce, alpha=(1.0 - mce_weight) / p.shape[0])
    return value, (None if g is None else _softmax_backward(g, p)), ratio, mce


@fused.kernel_of(kappa_batch)
def kappa_batch_kernel(z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, w_t: torch.Tensor,
                       class_weights: torch.Tensor | None, mce_weight: float | None, epsilon: float, log: bool,
                       want_grad: bool = True):
    """``kappa_batch`` as CPU kernel passes: ``W n / N`` with the labels' check
    (``kappa_expected``), softmax and the per-row sums (``kappa_stats``), the batch's ratio, then
    the gradient in place of the probabilities (``kappa_grad``, over the same row blocks)."""
    z = z.float().contiguous()
    b, c = z.shape
    target = kernels.index(target)
    w_t = w_t.float().contiguous()
    cw = None if class_weights is None else class_weights.float().contiguous()
    m = z.new_empty(c)  # W n / N, with the labels' check (a label out of range: IndexError)
    kernels.launch("kappa_expected", b, target, b, w_t, c, m, labels=(target, c, "target"))
    p, sums = torch.empty_like(z), z.new_empty(2, b)
    obs, pm = sums[0], sums[1]
    mce_values, pe = (z.new_empty(b), z.new_empty(b)) if mce_weight is not None else (None, None)
    threads = kernels.threads_for(b, c)  # both passes over the same row blocks (p's layout)
    kernels.launch("kappa_stats", b, z, target, w_t, m, cw, c, kernels.ROWS, p, obs, pm, mce_values, pe,
                   threads=threads)
    # The batch's few scalars as Python numbers (a CPU path: reading them waits for nothing),
    # not a dozen one-element tensor ops; float32 sums, as the eager path's.
    observed, expected = sums.sum(dim=1).tolist()
    denominator = expected + epsilon
    ratio = observed / denominator
    value = math.log(ratio + epsilon) if log else ratio
    a_wk = 1.0 / denominator
    if log:
        a_wk /= ratio + epsilon
    mce, a_mce = None, 0.0
    if mce_weight is not None:
        mce = mce_values.mean().item()
        value = mce_weight * value + (1.0 - mce_weight) * mce
        a_wk, a_mce = a_wk * mce_weight, (1.0 - mce_weight) / b
        mce = torch.scalar_tensor(mce, dtype=z.dtype)
    value, ratio_t = torch.scalar_tensor(value, dtype=z.dtype), torch.scalar_tensor(ratio, dtype=z.dtype)
    if not want_grad:
        return value, None, ratio_t, mce
    kernels.launch("kappa_grad", b, p, target, w_t, m, a_wk, ratio, a_mce, cw, obs, pm, pe, c, kernels.ROWS,
                   threads=threads)
    return value, p, ratio_t, mce


@LOSSES.register("wk", "weighted kappa loss: 1 - soft QWK of the batch, in [0, 2] (ordinal)")
class WeightedKappaLoss(_BatchLoss):
    """Weighted kappa loss (de la Torre et al. 2018; the [0, 2] form of Vargas et al. 2020),
    as dlordinal's ``WKLoss``.

    ``WK = sum_b sum_i p_bi W[i, y_b] / ((1/N) sum_{i,j} W[i, j] (sum_b p_bi) n_j + epsilon)``

    with ``p = softmax(z)``, ``n_j`` the count of label j in the batch and ``W`` from
    ``kappa_weights`` (``(i - j)^2 / (C - 1)^2``). With one-hot predictions ``1 - WK`` is the
    quadratic weighted kappa of the batch (``metrics/ordinal.py:qwk``, tested): minimising
    WK maximises a soft QWK. 0 for a perfect batch, 1 for chance agreement, up to 2.
    ``log=True`` gives ``log(WK + epsilon)``, de la Torre's original form (in (-inf, log 2]).

    Args:
        penalization: ``'quadratic'`` (default) | ``'linear'`` (``|i - j| / (C - 1)``).
        class_weights: one weight per class (applied to the true class's column of W) or None.
        epsilon: added to the denominator (dlordinal's 1e-10): a batch whose labels and
            predictions sit in one class has a 0 denominator.
        log: take the log of the ratio.
        logit_scale, penalty, penalty_weight, penalty_on: see ``SoftmaxLoss``. reduction: 'mean' only.

    The gradient of a ratio of batch sums couples the samples: a batch of 1 carries no
    kappa (its chance agreement equals its agreement); use batches of tens or more.
    """

    def __init__(self, penalization: str = "quadratic", class_weights: Sequence[float] | None = None,
                 epsilon: float = 1e-10, log: bool = False, **kwargs):
        super().__init__(**kwargs)
        kappa_weights(2, penalization)  # checks the name
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.penalization, self.epsilon, self.log = penalization, float(epsilon), bool(log)
        self.class_weights = _check_class_weights(class_weights)

    def batch_value(self, z, target, parts):
        value, grad, _, _ = fused.call(kappa_batch, z.detach(), target, *self.weights(z.shape[1], z.device), None,
                                       None, self.epsilon, self.log, want_grad=needs_grad(z))
        return with_grad(z, value, grad)  # a 0-d value: its one upstream number scales grad


@LOSSES.register("mce", "mean per-class squared error of the softmax (Brier / C) (ordinal)")
class MeanClassErrorLoss(SoftmaxLoss):
    """Mean squared error per class, averaged over the classes (dlordinal's ``MCELoss``).

    ``MCE(p, y) = (1/C) sum_c w_c (p_c - 1[c = y])^2`` per sample (the multiclass Brier score
    divided by C), ``p = softmax(z)``; the batch mean equals dlordinal's ``reduction='mean'``
    (the mean over classes of the per-class mean over the batch).

    Our convention: ``reduction='none'`` gives the per-sample values ``[B]`` and ``'sum'`` their
    sum, like every softloss loss; dlordinal's ``'none'`` gives the per-class means ``[C]`` and
    its ``'sum'`` their sum (C times its mean). Both differences are tested.

    Args:
        class_weights: ``w_c``, one per class, or None (all 1).
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.
    """

    task_kinds = ("ordinal", "multiclass")

    def __init__(self, class_weights: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.class_weights = _check_class_weights(class_weights)

    def per_sample(self, logits, target, **aux):
        w = None if self.class_weights is None else torch.tensor(self.class_weights, device=logits.device)
        return row_loss(mce_rows, logits, target, w)[0]


@LOSSES.register("mce_wk", "wk_weight * wk + (1 - wk_weight) * mce (ordinal)")
class MceWkLoss(_BatchLoss):
    """``wk_weight * WK + (1 - wk_weight) * MCE`` (dlordinal's ``MCEAndWKLoss`` with ``C = wk_weight``):
    the kappa loss keeps the ranking, the per-class error keeps every class in the predictions.

    Args:
        wk_weight: in [0, 1] (default 0.5).
        penalization, class_weights: as ``wk`` (class_weights also weigh the MCE term, as in dlordinal).
        logit_scale, penalty, penalty_weight, penalty_on: see ``SoftmaxLoss``. reduction: 'mean' only.

    ``last_parts`` holds ``wk`` and ``mce``.
    """

    def __init__(self, wk_weight: float = 0.5, penalization: str = "quadratic",
                 class_weights: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= wk_weight <= 1.0:
            raise ValueError(f"wk_weight must be in [0, 1], got {wk_weight}")
        kappa_weights(2, penalization)
        self.wk_weight, self.penalization = float(wk_weight), penalization
        self.class_weights = _check_class_weights(class_weights)

    def batch_value(self, z, target, parts):
        cw = None if self.class_weights is None else torch.tensor(self.class_weights, device=z.device)
        value, grad, wk, mce = fused.call(kappa_batch, z.detach(), target, *self.weights(z.shape[1], z.device), cw,
                                          self.wk_weight, 1e-10, False, want_grad=needs_grad(z))
        parts.update(wk=wk.detach(), mce=mce.detach())
        return with_grad(z, value, grad)  # a 0-d value: its one upstream number scales grad
