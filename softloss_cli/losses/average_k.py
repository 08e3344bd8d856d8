"""Average-K losses: train a model whose thresholded scores give sets of about K labels.

Average-K classification returns, for each input, every class whose score passes one
global threshold chosen so that sets hold K labels on average (``metrics/average_k.py``).
Thresholding the softmax of a CE model is the simple, consistent method. The losses here
train a *multi-label* view of single-label data instead, whose sigmoid scores are the ones
thresholded:

- ``two_head``: CE on a softmax head + BCE on a second, multi-label head whose targets are
  pseudo-labels made by thresholding the softmax so that K classes are positive on average
  (Garcin, Servajean, Joly, Salmon, WACV 2025, arXiv 2303.18118).
- ``bce_an``, ``bce_wan``, ``epr``: single-positive multi-label baselines on the one-hot
  label, for one sigmoid head alone (Cole et al., CVPR 2021, "Multi-Label Learning from
  Single Positive Labels", arXiv 2106.09708).

Targets are int64 class indices ``[B]`` (multiclass); the losses one-hot them inside.
Normalisation (shared, from Cole et al.'s code): the BCE terms are **averaged over the C
classes** of a sample (their ``loss_mtx / (B * C)``), then over the batch. Under SGD the
gradient per logit is then ~1/C of softmax CE's; the ``average_k`` preset uses AdamW,
which does not care about the scale. Logs are ``logsigmoid``/``softplus`` of the logits
(Cole et al. add ``1e-5`` inside ``log(p)``; we need no epsilon), in float32 with
autocast off.

Cost: the BCE terms compute their values and closed-form gradients in one row function
(``base.row_loss``, compiled by ``losses/fused.py`` where that pays); on CPU the batch's
``(K-1)*B`` largest probabilities are found among the entries above a threshold estimated
from a strided sample (then ``topk`` on those few), instead of a ``topk`` over all ``B x C``
entries. ``two_head`` costs more than ``ce``: besides the softmax it trains a second
``[B, C]`` head with a BCE (a ``softplus`` and a ``sigmoid`` per entry) and picks the pseudo-labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softloss_cli.losses import fused, kernels
from softloss_cli.losses.base import (
    LOSSES,
    SoftmaxLoss,
    float32_region,
    needs_grad,
    reduce_loss,
    row_loss,
    with_grad,
    with_grads,
)
from softloss_cli.losses.multilabel import SigmoidLoss, bce_rows, softplus_sigmoid

__all__ = ["TwoHeadLoss", "AssumeNegativeLoss", "WeakAssumeNegativeLoss", "ExpectedPositiveLoss"]

THRESHOLD_MODES = ("batch", "running")


def bce_one_hot_rows(z: torch.Tensor, target: torch.Tensor, neg_weight: float, scale: float, want_grad: bool = True):
    """``scale * [softplus(-z_y) + neg_weight * sum_{c != y} softplus(z_c)]`` per row, and its gradient.

    BCE on the one-hot label with the negatives weighted ``neg_weight``; ``z [B, C]`` detached,
    ``target [B]``; returns ``(values [B], grad [B, C] or None)``. Gradient:
    ``scale * neg_weight * sigmoid(z_c)`` off the label, ``scale * (sigmoid(z_y) - 1)`` at it.
    """
    zd = z
    idx = target.long()[:, None]
    z_y = zd.gather(1, idx)
    sp = F.softplus(zd)
    sp.scatter_(1, idx, 0.0)
    values = (sp.sum(dim=1) * neg_weight + F.softplus(-z_y).squeeze(1)) * scale
    grad = None
    if want_grad:
        grad = torch.sigmoid(zd).mul_(scale * neg_weight)
        grad.scatter_(1, idx, (torch.sigmoid(z_y) - 1.0) * scale)
    return values, grad


@fused.variant_of(bce_one_hot_rows)
def bce_one_hot_rows_fused(z: torch.Tensor, target: torch.Tensor, neg_weight: float, scale: float,
                           want_grad: bool = True):
    """``bce_one_hot_rows`` for the compiled path: the label's entries chosen with a mask."""
    is_y = torch.arange(z.shape[1], device=z.device)[None, :] == target.long()[:, None]
    sp, s = softplus_sigmoid(z)
    # softplus(-z) = softplus(z) - z at the label, softplus(z) off it
    values = torch.where(is_y, sp - z, neg_weight * sp).sum(dim=1) * scale
    grad = torch.where(is_y, s - 1.0, neg_weight * s) * scale if want_grad else None
    return values, grad


@fused.kernel_of(bce_one_hot_rows)
def bce_one_hot_rows_kernel(z: torch.Tensor, target: torch.Tensor, neg_weight: float, scale: float,
                            want_grad: bool = True):
    """``bce_one_hot_rows`` as one CPU kernel (``cpu_kernels.cpp``)."""
    return kernels.values_and_grad("bce_one_hot_rows", z, target, float(neg_weight), float(scale), want_grad=want_grad)


def _top_entries(values: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(boundary, index)``: the ``count`` largest entries of a flat tensor (``index``, in no
    particular order) and the smallest of them (``boundary``), as ``values.topk(count)`` gives
    them; on the CPU the entries tied at the boundary are taken in index order (as the kernel,
    ``batch_pseudo_labels``, takes them), on a GPU in topk's order.

    On CPU, a strided sample gives a bound that enough entries pass (checked; else the full
    ``topk``), and the boundary is a ``kthvalue`` (linear time) among those candidates.
    """
    n = values.numel()
    if values.device.type != "cpu":  # no host sync on a GPU: topk's own order among ties
        top, index = values.topk(count)
        return top[-1], index
    if count * 8 > n or n < 65536:  # on the CPU, ties in index order at every size (as the kernel)
        boundary = values.topk(count).values[-1]
        above = (values > boundary).nonzero().squeeze(1)
        ties = (values == boundary).nonzero().squeeze(1)[: count - above.numel()]
        return boundary, torch.cat([above, ties])
    sample = values[:: -(-n // 16384)]  # ~16k entries, evenly strided
    r = min(sample.numel(), int(1.25 * count * sample.numel() / n) + 64)
    bound = sample.topk(r).values[-1]
    candidates = (values >= bound).nonzero().squeeze(1)
    if candidates.numel() < count:
        top, index = values.topk(count)
        return top[-1], index
    cand = values.index_select(0, candidates)
    boundary = cand.kthvalue(cand.numel() - count + 1).values
    above = candidates[cand > boundary]
    ties = candidates[cand == boundary][: count - above.numel()]
    return boundary, torch.cat([above, ties])


def batch_pseudo_labels(others: torch.Tensor, target: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pseudo [B, C], boundary)``: 1 at the ``count`` largest entries of ``others [B, C]`` (the
    probabilities with -1 at each row's label) and at each row's label ``target [B]``, else 0;
    ``boundary`` is the smallest entry chosen (``_top_entries``)."""
    b, c = others.shape
    boundary, index = _top_entries(others.reshape(-1), count)
    pseudo = torch.zeros(b * c, dtype=others.dtype, device=others.device)
    pseudo[index] = 1.0
    return pseudo.view(b, c).scatter_(1, target.long()[:, None], 1.0), boundary


@fused.kernel_of(batch_pseudo_labels)
def batch_pseudo_labels_kernel(others: torch.Tensor, target: torch.Tensor, count: int):
    """``batch_pseudo_labels`` as one CPU kernel (``cpu_kernels.cpp``): a radix select on the
    floats' order keys (an 11-bit histogram of every entry, then the few entries of the
    boundary's bin refined), and the pseudo-labels written in one pass."""
    others = others.float().contiguous()
    b, c = others.shape
    target = kernels.index(target)
    pseudo = torch.empty_like(others)
    boundary = others.new_empty(())
    kernels.launch("batch_pseudo_labels", b, others, target, b, c, count, pseudo, boundary,
                   labels=(target, c, "target"))
    return pseudo, boundary


def pseudo_bce_rows(a: torch.Tensor, others: torch.Tensor, target: torch.Tensor, count: int, want_grad: bool = True):
    """The two-head loss's multi-label term: ``(values [B], grad [B, C] or None, boundary)`` of
    ``bce_rows(a, pseudo)`` with ``pseudo, boundary = batch_pseudo_labels(others, target, count)``.

    The CPU kernel reads each pseudo-label off ``others`` as the BCE reaches its entry (one
    selection pass, then one BCE pass; the ``[B, C]`` pseudo-labels are never written)."""
    pseudo, boundary = batch_pseudo_labels(others, target, count)
    values, grad = bce_rows(a, pseudo, want_grad=want_grad)
    return values, grad, boundary


@fused.kernel_of(pseudo_bce_rows)
def pseudo_bce_rows_kernel(a: torch.Tensor, others: torch.Tensor, target: torch.Tensor, count: int,
                           want_grad: bool = True):
    """``pseudo_bce_rows`` as two CPU kernels (``cpu_kernels.cpp``): ``pseudo_select`` (the radix
    select of ``batch_pseudo_labels``), then ``pseudo_bce_rows``."""
    a, others = a.float().contiguous(), others.float().contiguous()
    b, c = a.shape
    target = kernels.index(target)
    selection, boundary = torch.empty(2, dtype=torch.int64), others.new_empty(())
    kernels.launch("pseudo_select", b, others, target, b, c, count, selection, boundary, labels=(target, c, "target"))
    kb, last_tie = selection.tolist()
    values = a.new_empty(b)
    grad = torch.empty_like(a) if want_grad else None
    kernels.launch("pseudo_bce_rows", b, a, others, target, kb, last_tie, c, kernels.ROWS, values, grad,
                   elements_per_row=c, labels=(target, c, "target"))
    return values, grad, boundary


def _one_hot(logits: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """float32 one-hot ``[B, C]`` of int64 class indices ``[B]`` (shape checks only, no host sync)."""
    _check_labels(logits, target, name)
    return F.one_hot(target.long(), logits.shape[1]).float()


def _check_labels(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Shape and dtype checks of int64 class indices ``[B]`` (no host sync)."""
    if target.ndim != 1 or target.shape[0] != logits.shape[0] or target.is_floating_point():
        raise ValueError(
            f"loss={name} expects int64 class indices [B={logits.shape[0]}], got {target.dtype} "
            f"{tuple(target.shape)}"
        )


@LOSSES.register("two_head", "softmax CE + multi-label head on pseudo-labels with K positives on average")
class TwoHeadLoss(SoftmaxLoss):
    """The two-head Average-K loss (Garcin et al., arXiv 2303.18118), as we implemented it.

    The model has a softmax head (``logits`` z) and a multi-label head (``aux_logits`` a)
    on the same features (``model.heads=two``). With ``p = softmax(alpha * z)`` detached:

        ``loss_i = CE(z_i, y_i) + aux_weight * (1/C) sum_c BCE(a_ic, t_ic)``

    where the pseudo-labels ``t`` of a batch of B samples are: ``t_iy_i = 1`` (the true
    label), plus ``t_ic = 1`` for the ``round((K - 1) * B)`` largest ``p_ic`` among the
    batch's other entries (``c != y_i``), all the rest 0, so a sample has K positives on
    average over the batch: many for an ambiguous input whose softmax is spread, only its
    label for a clear one. Average-K sets are then read from ``sigmoid(a)``
    (``set_source = 'aux_logits'``); the softmax head is the one ``accuracy`` uses.

    The paper's body was not available to us; the choices that are ours:
        - the true label is always positive and never competes for the (K-1)*B slots;
        - the budget is per batch (``threshold='batch'``: the ``(K-1)*B``-th largest
          probability, ties at the boundary broken by ``torch.topk``'s order), or a running
          estimate of that boundary value (``threshold='running'``: an exponential moving
          average with ``momentum``, updated in training mode only, then every other entry
          with ``p >= threshold`` is positive; smoother for small batches, but the budget
          then holds only on average over batches);
        - pseudo-labels come from the current model's softmax (no teacher, no warm-up),
          detached, so the multi-label head never pushes the softmax head directly;
        - the BCE is averaged over classes (as the baselines, Cole et al.) and weighted by
          ``aux_weight``; the CE is plain (``logit_scale``/``penalty`` of SoftmaxLoss apply).

    Args:
        k: K, the target mean number of positives per sample (>= 1; a float is allowed).
        aux_weight: weight of the multi-label term (>= 0).
        threshold: ``'batch'`` | ``'running'``.
        momentum: EMA momentum of the running threshold, in [0, 1).
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.

    Shapes: logits ``[B, C]``, ``aux_logits`` ``[B, C]``, target int64 ``[B]``; returns a
    scalar. ``last_parts``: ``ce``, ``aux_bce``, ``pseudo_threshold`` (the boundary
    probability), ``pseudo_positives`` (mean positives per sample). The running
    threshold is the buffer ``running_threshold`` (in ``state_dict()``; NaN until the
    first training batch).
    """

    task_kinds = ("multiclass",)
    activation = "softmax"
    needs_aux = True
    set_source = "aux_logits"

    def __init__(self, k: float = 2.0, aux_weight: float = 1.0, threshold: str = "batch",
                 momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if not k >= 1:
            raise ValueError(f"k must be >= 1 (the true label is always in the set), got {k}")
        if not aux_weight >= 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if threshold not in THRESHOLD_MODES:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLD_MODES)}, got {threshold!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.k, self.aux_weight, self.threshold, self.momentum = float(k), float(aux_weight), threshold, float(momentum)
        self.register_buffer("running_threshold", torch.tensor(float("nan")))
        self._parts: dict[str, torch.Tensor] = {}

    def _extra(self, b: int, c: int) -> int:
        """The pseudo-positives a batch of ``b`` samples gets besides its labels: ``round((K - 1) b)``."""
        return min(max(int(round((self.k - 1.0) * b)), 0), b * (c - 1))

    @torch.no_grad()
    def pseudo_labels(self, probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t float [B, C], boundary probability)`` from detached softmax probabilities."""
        # Probabilities are >= 0, so -1 keeps the true entries out of the top (K-1) B.
        return self._pseudo_from_others(probs.clone().scatter_(1, target.long()[:, None], -1.0), target)

    @torch.no_grad()
    def _pseudo_from_others(self, others: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pseudo_labels`` from the probabilities with -1 at each row's label (``others [B, C]``)."""
        b, c = others.shape
        extra = self._extra(b, c)
        if extra == 0:
            return F.one_hot(target.long(), c).float(), torch.full((), float("nan"), device=others.device)
        if self.threshold == "batch":
            if fused.path_for(others, batch_pseudo_labels) == "kernel":  # (never compiled: topk, nonzero)
                return fused.call(batch_pseudo_labels, others, target, extra)
            return batch_pseudo_labels(others, target, extra)
        idx = target.long()[:, None]
        boundary, _ = _top_entries(others.reshape(-1), extra)
        running = self.running_threshold.to(others.device)
        if self.training:
            ema = self.momentum * running + (1.0 - self.momentum) * boundary
            running = torch.where(torch.isnan(running), boundary, ema)  # the first batch starts the average
            self.running_threshold = running
        return (others >= running).float().scatter_(1, idx, 1.0), running

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, aux_logits: torch.Tensor | None = None,
                   **aux) -> torch.Tensor:
        if aux_logits is None:
            raise ValueError("loss=two_head needs the second head's aux_logits: add model.heads=two")
        if aux_logits.shape != logits.shape:
            raise ValueError(f"aux_logits {tuple(aux_logits.shape)} must be shaped like logits {tuple(logits.shape)}")
        _check_labels(logits, target, "two_head")  # the shape check
        # Both heads' values and closed-form gradients, then one autograd node for the sum.
        ce, grad_ce, others = fused.call(two_head_ce_rows, logits.detach(), target, want_grad=needs_grad(logits))
        extra, pseudo = self._extra(*logits.shape), None
        if self.threshold == "batch" and extra > 0 and fused.path_for(aux_logits, pseudo_bce_rows) == "kernel":
            bce, grad_bce, boundary = fused.call(pseudo_bce_rows, aux_logits.detach(), others, target, extra,
                                                 want_grad=needs_grad(aux_logits))
        else:
            pseudo, boundary = self._pseudo_from_others(others, target)
            bce, grad_bce = fused.call(bce_rows, aux_logits.detach(), pseudo, want_grad=needs_grad(aux_logits))
        weight = self.aux_weight / logits.shape[1]  # the BCE is a mean over classes
        values = with_grads(torch.add(ce, bce, alpha=weight), (logits, grad_ce, 1.0), (aux_logits, grad_bce, weight))
        c, b = logits.shape[1], logits.shape[0]
        positives = 1.0 + extra / b if self.threshold == "batch" else None
        # batch threshold: exactly the labels plus the extra entries (no pass over pseudo)
        self._parts = {
            "ce": lambda: ce.mean(),
            "aux_bce": lambda: bce.mean() / c,
            "pseudo_threshold": boundary.detach(),
            "pseudo_positives": (lambda: torch.full((), positives, device=logits.device)) if positives is not None
            else (lambda: pseudo.sum(dim=1).mean()),
        }
        return values

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        loss = super().forward(logits, target, **aux)
        self.last_parts.merge(self._parts)  # functions: means taken when read
        return loss


def two_head_ce_rows(z: torch.Tensor, target: torch.Tensor, want_grad: bool = True):
    """CE of the softmax head and what its pseudo-labels need, from one softmax.

    ``z [B, C]`` detached, ``target [B]``. Returns ``(ce [B], grad [B, C] or None, others
    [B, C])``: ``grad = p - onehot(y)``, ``others`` = ``p`` with -1 at each row's label.
    ``log p_y = (z_y - max z) + log p_max``, where ``p_max >= 1/C`` never underflows.
    """
    idx = target[:, None]
    probs = torch.softmax(z, dim=1)
    ce = (z.amax(dim=1) - z.gather(1, idx).squeeze(1)) - probs.amax(dim=1).log()
    grad = probs.scatter_add(1, idx, torch.full_like(ce[:, None], -1.0)) if want_grad else None
    return ce, grad, probs.scatter_(1, idx, -1.0)


@fused.kernel_of(two_head_ce_rows)
def two_head_ce_rows_kernel(z: torch.Tensor, target: torch.Tensor, want_grad: bool = True):
    """``two_head_ce_rows`` as one CPU kernel (``cpu_kernels.cpp``). With the gradient, ``others``
    is the gradient itself (one ``[B, C]`` array fewer): its label entries hold ``p_y - 1`` (``-0.0``
    where ``p_y = 1``) instead of -1, as far below every probability for the pseudo-label kernels,
    which compare the floats' order keys (``-0.0 < +0.0``)."""
    z = z.float().contiguous()
    b, c = z.shape
    target = kernels.index(target)
    ce = z.new_empty(b)
    grad = torch.empty_like(z) if want_grad else None
    others = grad if want_grad else torch.empty_like(z)
    kernels.launch("two_head_ce_rows", b, z, target, c, kernels.ROWS, ce, grad, None if want_grad else others,
                   elements_per_row=c, labels=(target, c, "target"))
    return ce, grad, others


class _SinglePositiveLoss(SigmoidLoss):
    """Sigmoid losses on the one-hot label of single-label data (Average-K baselines)."""

    task_kinds = ("multiclass",)
    activation = "sigmoid"
    set_source = "logits"


@LOSSES.register("bce_an", "BCE on the one-hot label, all other classes assumed negative (Cole et al. 2021)")
class AssumeNegativeLoss(_SinglePositiveLoss):
    """"Assume negative" BCE (Cole et al. 2021, arXiv 2106.09708, ``L_AN``).

        ``loss_i = (1/C) [ -log sigmoid(z_iy_i) - sum_{c != y_i} log(1 - sigmoid(z_ic)) ]``

    Args:
        reduction: ``'mean'`` over the batch (default) | ``'sum'`` | ``'none'``.

    Shapes: logits ``[B, C]``, target int64 ``[B]``; returns a scalar (mean over classes,
    then over the batch).
    """

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        _check_labels(logits, target, "bce_an")  # the shape check
        return row_loss(bce_one_hot_rows, logits, target, 1.0, 1.0 / logits.shape[1])[0]


@LOSSES.register("bce_wan", "BCE on the one-hot label, negatives weighted 1/(C-1) (Cole et al. 2021)")
class WeakAssumeNegativeLoss(_SinglePositiveLoss):
    """"Weak assume negative" BCE (Cole et al. 2021, arXiv 2106.09708, ``L_WAN``).

        ``loss_i = (1/C) [ -log sigmoid(z_iy_i) - gamma sum_{c != y_i} log(1 - sigmoid(z_ic)) ]``,
        ``gamma = 1 / (C - 1)``

    so the assumed negatives weigh as much, together, as the one observed positive.

    Args:
        reduction: ``'mean'`` over the batch (default) | ``'sum'`` | ``'none'``.

    Shapes: logits ``[B, C]``, target int64 ``[B]``; returns a scalar.
    """

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        _check_labels(logits, target, "bce_wan")  # the shape check
        gamma = 1.0 / max(logits.shape[1] - 1, 1)
        return row_loss(bce_one_hot_rows, logits, target, gamma, 1.0 / logits.shape[1])[0]


@LOSSES.register("epr", "positive term + expected-positive regulariser (Cole et al. 2021)")
class ExpectedPositiveLoss(_SinglePositiveLoss):
    """Expected positive regularisation (Cole et al. 2021, arXiv 2106.09708, ``L_EPR``).

        ``loss = mean_i [ -(1/C) log sigmoid(z_iy_i) ] + reg_weight * R``,
        ``R = ( mean_i sum_c sigmoid(z_ic) - k )^2 / C^2``

    Only the observed positive has a likelihood term; the regulariser, computed on the
    whole batch, asks for k positive classes per sample on average (for Average-K, k = K).
    ``R`` is divided by ``C^2`` as in the authors' code.

    Args:
        k: expected number of positives per sample (> 0; default 2, the ``two_head`` K).
        reg_weight: weight of R (>= 0; the authors' code uses 1).
        reduction: ``'mean'`` (default): the formula above. ``'sum'``: the sum of the positive
            terms + ``B * reg_weight * R`` (B times the mean). ``'none'``: per sample, the
            positive term + ``reg_weight * R`` (R is a batch quantity; its mean is ``'mean'``).

    Shapes: logits ``[B, C]``, target int64 ``[B]``; returns a scalar. ``last_parts``:
    ``main`` (the positive term), ``reg`` (R), ``expected_positives``.
    """

    def __init__(self, k: float = 2.0, reg_weight: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k}")
        if not reg_weight >= 0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
        self.k, self.reg_weight = float(k), float(reg_weight)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        _check_labels(logits, target, "epr")
        return F.softplus(-logits.gather(1, target.long()[:, None]).squeeze(1)) / logits.shape[1]

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        with float32_region(logits.device.type):
            z = logits.float()
            if self.reduction != "none" and fused.path_for(z, epr_batch) == "kernel":
                # the CPU kernel: value and closed-form gradient in two passes (epr_batch)
                _check_labels(z, target, "epr")
                loss, grad, main, reg, expected = fused.call(epr_batch, z.detach(), target, self.k, self.reg_weight,
                                                             self.reduction == "sum", want_grad=needs_grad(z))
                self.last_parts = {"main": main, "reg": reg, "expected_positives": expected}
                return with_grad(z, loss, grad)
            positive = self.per_sample(z, target)
            expected = torch.sigmoid(z).sum(dim=1).mean()
            main = reduce_loss(positive, self.reduction)
            reg, loss = _epr_value(main, expected, self.k, self.reg_weight, *z.shape, self.reduction == "sum")
        self.last_parts = {"main": main.detach(), "reg": reg.detach(), "expected_positives": expected.detach()}
        return loss


def _epr_value(main, expected, k: float, reg_weight: float, b: int, c: int, total: bool):
    """``(reg, value)`` of ``epr`` from the reduced positive term ``main`` and ``E`` (tensors or
    numbers): ``reg = (E - k)^2 / C^2``, ``value = main + reg_weight * scale * reg``, ``scale``
    = B for a sum, else 1."""
    reg = (expected - k) ** 2 / c**2
    return reg, main + reg_weight * (b if total else 1.0) * reg


def _epr_grad_factors(expected, k: float, reg_weight: float, b: int, c: int, total: bool):
    """``epr``'s gradient as ``a * s (1 - s)`` plus ``per_row * (s_y - 1)`` at each row's label:
    ``(a, per_row)``, with ``a = reg_weight * scale * 2 (E - k) / (C^2 B)`` and ``per_row`` =
    ``1 / C`` (a sum) or ``1 / (C B)`` (a mean)."""
    a = reg_weight * (b if total else 1.0) * 2.0 * (expected - k) / (c * c * b)
    return a, (1.0 if total else 1.0 / b) / c


def epr_batch(z: torch.Tensor, target: torch.Tensor, k: float, reg_weight: float, total: bool,
              want_grad: bool = True):
    """``epr``'s value and closed-form gradient w.r.t. detached ``z [B, C]`` (reduction 'mean', or
    'sum' with ``total``): ``(value, grad [B, C] or None, main, reg, expected)``, 0-d tensors.

    ``value = main + reg_weight * scale * reg``, ``main`` the mean (sum) over rows of
    ``softplus(-z_iy) / C``, ``reg = (E - k)^2 / C^2``, ``E = mean_i sum_c s_ic``, ``s = sigmoid(z)``,
    ``scale`` = 1 (B with ``total``). Gradient:
    ``reg_weight * scale * 2 (E - k) / (C^2 B) * s (1 - s)``, plus ``(s_iy - 1) / C`` (divided
    by B for the mean) at each row's label.
    """
    b, c = z.shape
    idx = target.long()[:, None]
    s = torch.sigmoid(z)
    z_y = z.gather(1, idx).squeeze(1)
    positive = F.softplus(-z_y) / c
    expected = s.sum(dim=1).mean()
    main = positive.sum() if total else positive.mean()
    reg, value = _epr_value(main, expected, k, reg_weight, b, c, total)
    grad = None
    if want_grad:
        a, per_row = _epr_grad_factors(expected, k, reg_weight, b, c, total)
        grad = s * (1.0 - s) * a
        grad.scatter_add_(1, idx, ((torch.sigmoid(z_y) - 1.0) * per_row)[:, None])
    return value, grad, main, reg, expected


@fused.kernel_of(epr_batch)
def epr_batch_kernel(z: torch.Tensor, target: torch.Tensor, k: float, reg_weight: float, total: bool,
                     want_grad: bool = True):
    """``epr_batch`` as two CPU kernel passes (``cpu_kernels.cpp``: ``epr_stats``, then the
    batch's scalars as Python numbers, then ``epr_grad`` in place)."""
    z = z.float().contiguous()
    b, c = z.shape
    target = kernels.index(target)
    grad = torch.empty_like(z) if want_grad else None
    rows = z.new_empty(3, b)  # per row: sum_c s, the positive term, s_y
    kernels.launch("epr_stats", b, z, target, c, kernels.ROWS, grad, rows[0], rows[1], rows[2],
                   elements_per_row=c, labels=(target, c, "target"))
    s_total, positive_total = rows[:2].sum(dim=1).tolist()  # float32 sums, as the eager path's
    expected = s_total / b
    main = positive_total if total else positive_total / b
    reg, value = _epr_value(main, expected, k, reg_weight, b, c, total)
    if want_grad:
        a, per_row = _epr_grad_factors(expected, k, reg_weight, b, c, total)
        kernels.launch("epr_grad", b, grad, target, a, per_row, rows[2], c, kernels.ROWS, elements_per_row=c)
    value, main, reg, expected = (torch.scalar_tensor(v, dtype=z.dtype) for v in (value, main, reg, expected))
    return value, grad, main, reg, expected
