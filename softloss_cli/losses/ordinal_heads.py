"""Ordinal output layers that are not a softmax, and their losses: CORAL, CORN and cumulative
link models (CLM).

A non-softmax head (``models/heads.py``, ``model.head=coral|corn|clm``) returns a dict whose
``logits`` entry holds the **log class probabilities** ``[B, C]`` (so ``softmax(logits)`` is
the head's class distribution and every metric, figure, report and predict path that applies
a softmax works unchanged), plus its native outputs:

* ``coral`` (Cao, Mirjalili & Raschka, arXiv:1901.07884): ``cum_logits`` ``[B, C-1]``,
  ``s_k = g(x) + b_k`` with ONE shared weight vector and C-1 biases; ``P(y > k) = sigmoid(s_k)``.
* ``corn`` (Shi, Cao & Raschka, arXiv:2111.08851): ``cond_logits`` ``[B, C-1]``, ``c_k`` with
  ``P(y > k | y > k-1) = sigmoid(c_k)`` (``P(y > -1) = 1``).
* ``clm`` (Vargas, Gutiérrez & Hervás-Martínez, Neurocomputing 2020, doi:10.1016/j.neucom.2020.03.034):
  ``cum_logits`` ``[B, C-1]``, ``a_k = theta_k - g(x)`` with ordered thresholds, and
  ``P(y <= k) = F(a_k)`` for the link ``F`` (logit, probit or cloglog).

The functions ``*_log_probs`` turn those native outputs into log class probabilities; the
losses ``coral``, ``corn`` and ``clm`` consume them. Everything is computed in float32 (or
the input's float64) with autocast off, in the log domain: finite values and gradients for
outputs of any size (tested at +-1e4).

Rank consistency and the CORAL/CLM class distribution. Class probabilities are differences of
cumulative probabilities, ``P(y = k) = P(y > k-1) - P(y > k)``. For CLM the thresholds are
ordered by construction (``theta_1`` plus a cumulative sum of softplus gaps), so every
difference is >= 0. CORAL's biases are not constrained: the paper proves the trained biases
come out ordered (its rank consistency follows from the SHARED weight vector), but during
training or on unusual data two may swap. Our choice: a negative difference is clamped to
probability 0 (log probability ``LOG_FLOOR``) and the row is renormalised (a ``log_softmax``),
so the distribution is always valid; with ordered biases nothing is clamped and the
distribution is exact. CORN's chained product is a valid distribution by construction.

Point predictions. CORAL and CORN predict, in their papers, the label ``sum_k 1[P(y > k) > 1/2]``
(the median of the distribution); softloss's argmax metrics (``accuracy``, ``mae``) use the
mode of the class distribution, which can differ; ``mae_expected`` uses its mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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

__all__ = [
    "CLM_LINKS",
    "LOG_FLOOR",
    "ClmLoss",
    "CoralLoss",
    "CornLoss",
    "clm_log_probs",
    "coral_log_probs",
    "corn_log_probs",
    "ordered_thresholds",
]

#: log-probability given to a class whose probability is 0 (clamped CORAL differences,
#: underflow): log of the smallest normal float32, finite so ``softmax`` and the metrics work.
LOG_FLOOR = math.log(torch.finfo(torch.float32).tiny)

CLM_LINKS = ("logit", "probit", "cloglog")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0`` (Mächler 2012: ``log(-expm1(x))`` above ``-log 2``,
    ``log1p(-exp(x))`` below). ``x`` must be strictly negative (callers clamp it)."""
    near = x > -math.log(2.0)
    # Each branch gets inputs valid for it, so the branch not taken has a finite gradient (no 0 * inf).
    cut = torch.full_like(x, -math.log(2.0))
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, x, cut))),
                       torch.log1p(-torch.exp(torch.where(near, cut, x))))


def _negative(x: torch.Tensor) -> torch.Tensor:
    """``x`` clamped to ``<= -tiny``: keeps ``log(1 - exp(x))`` finite (and its gradient 0, not
    NaN) where two cumulative probabilities coincide or swap."""
    return x.clamp(max=-torch.finfo(x.dtype).tiny)


def _log_sigmoid_diff(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(hi) - sigmoid(lo))`` for ``hi > lo``, exact for any size:
    ``sigmoid(hi) - sigmoid(lo) = sigmoid(hi) * sigmoid(-lo) * (1 - exp(lo - hi))``.
    Where ``hi <= lo`` the difference is taken as 0 (``LOG_FLOOR`` after the final clamp)."""
    return F.logsigmoid(hi) + F.logsigmoid(-lo) + _log1mexp(_negative(lo - hi))


def _log_diff(log_hi: torch.Tensor, log_lo: torch.Tensor) -> torch.Tensor:
    """``log(exp(log_hi) - exp(log_lo))`` (0 probability where ``log_lo >= log_hi``)."""
    return log_hi + _log1mexp(_negative(log_lo - log_hi))


def _link_logs(a: torch.Tensor, link: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log F(a), log(1 - F(a)))`` for the link's CDF ``F``, both finite for finite ``a``.

    probit: ``log_ndtr(a)``, ``log_ndtr(-a)``. cloglog: ``F(a) = 1 - exp(-exp(a))``, so
    ``log(1 - F) = -exp(a)`` (``a`` clamped to <= 80, where ``1 - F`` is already 0 in float64
    terms of ``F``) and ``log F = log(1 - exp(-exp(a)))``, which is ``a`` itself to float
    precision below ``a = -30`` (where ``exp(a)`` would underflow).
    """
    if link == "probit":
        return torch.special.log_ndtr(a), torch.special.log_ndtr(-a)
    if link == "cloglog":
        e = torch.exp(a.clamp(-30.0, 80.0))
        log_f = torch.where(a < -30.0, a, _log1mexp(-e))
        return log_f, -e
    return F.logsigmoid(a), F.logsigmoid(-a)


def clm_log_probs(cum_logits: torch.Tensor, link: str = "logit") -> torch.Tensor:
    """Log class probabilities of a cumulative link model, ``[B, C]`` from ``[B, C-1]``.

    ``cum_logits[:, k] = a_k = theta_k - g(x)``, non-decreasing in k; ``P(y <= k) = F(a_k)``:

    ``P(y = 0) = F(a_0)``, ``P(y = k) = F(a_k) - F(a_{k-1})``, ``P(y = C-1) = 1 - F(a_{C-2})``.

    Each difference is taken in the log domain from whichever side is smaller, ``F`` (left
    tail) or ``1 - F`` (right tail), so that it does not cancel: ``log(F(a_k) - F(a_{k-1}))`` or
    ``log((1 - F(a_{k-1})) - (1 - F(a_k)))``; the logit link uses the exact identity of
    ``_log_sigmoid_diff``. Classes whose probability is 0 (equal or swapped ``a``'s, or
    underflow) get ``LOG_FLOOR``, and the rows are renormalised with ``log_softmax`` (a no-op up to
    rounding for ordered ``a``'s).

    Args:
        cum_logits: ``[B, C-1]`` float (computed in float32 at least, autocast off).
        link: ``'logit'`` | ``'probit'`` | ``'cloglog'``.
    """
    if link not in CLM_LINKS:
        raise ValueError(f"link must be one of {', '.join(CLM_LINKS)}, got {link!r}")
    with float32_region(cum_logits.device.type):
        a = cum_logits.float() if cum_logits.dtype != torch.float64 else cum_logits
        log_f, log_s = _link_logs(a, link)
        if link == "logit":
            middle = _log_sigmoid_diff(a[:, 1:], a[:, :-1])
        else:
            left = _log_diff(log_f[:, 1:], log_f[:, :-1])
            right = _log_diff(log_s[:, :-1], log_s[:, 1:])
            # Use the tail in which the two probabilities are small: F(a_k) < 1 - F(a_{k-1}).
            middle = torch.where(log_f[:, 1:] < log_s[:, :-1], left, right)
        log_p = torch.cat([log_f[:, :1], middle, log_s[:, -1:]], dim=1)
        return torch.log_softmax(log_p.clamp(min=LOG_FLOOR), dim=1)


def coral_log_probs(cum_logits: torch.Tensor) -> torch.Tensor:
    """Log class probabilities ``[B, C]`` of a CORAL head from its ``[B, C-1]`` outputs
    ``s_k`` (``P(y > k) = sigmoid(s_k)``): the logit CLM with ``a_k = -s_k``, i.e.
    ``P(y = k) = sigmoid(s_{k-1}) - sigmoid(s_k)`` (``s_{-1} = +inf``, ``s_{C-1} = -inf``).
    A negative difference (biases out of order) counts as 0, then the row is renormalised
    (see the module docstring)."""
    return clm_log_probs(-cum_logits, "logit")


def corn_log_probs(cond_logits: torch.Tensor) -> torch.Tensor:
    """Log class probabilities ``[B, C]`` of a CORN head from its ``[B, C-1]`` conditional
    logits ``c_k`` (``P(y > k | y > k-1) = sigmoid(c_k)``):

    ``log P(y > k) = sum_{j <= k} logsigmoid(c_j)``; ``log P(y = k) = log P(y > k-1) +
    logsigmoid(-c_k)`` for ``k < C-1`` and ``log P(y = C-1) = log P(y > C-2)``.

    A valid distribution for any logits (the terms telescope to 1); no clamping is needed
    (values stay finite, if very negative), only the float rounding of the sum.
    """
    with float32_region(cond_logits.device.type):
        c = cond_logits.float() if cond_logits.dtype != torch.float64 else cond_logits
        log_above = F.logsigmoid(c).cumsum(dim=1)  # log P(y > k)
        before = torch.cat([log_above.new_zeros(c.shape[0], 1), log_above[:, :-1]], dim=1)
        return torch.cat([before + F.logsigmoid(-c), log_above[:, -1:]], dim=1)


def ordered_thresholds(first: torch.Tensor, raw_gaps: torch.Tensor, min_gap: float = 0.0) -> torch.Tensor:
    """CLM thresholds ``theta_0 = first``, ``theta_k = theta_{k-1} + softplus(raw_gap_k) + min_gap``
    (``[C-1]`` from a scalar ``[1]`` and ``[C-2]`` raw gaps): increasing for any raw values (in
    floats a gap below the rounding of ``theta`` vanishes: two equal thresholds give their
    class probability 0, which ``clm_log_probs`` handles; ``min_gap > 0`` rules it out).

    dlordinal squares the raw gaps instead (``a_k ** 2``), which has a zero gradient at 0 and
    lets two thresholds meet; softplus keeps every gap positive with a gradient everywhere.
    """
    gaps = F.softplus(raw_gaps) + min_gap
    return torch.cat([first, first + gaps.cumsum(dim=0)])


def _native(aux: dict, key: str, loss_name: str, head: str) -> torch.Tensor:
    if key not in aux:
        from softloss_cli.errors import SoftlossError

        raise SoftlossError(f"loss={loss_name} needs the outputs of model.head={head} ({key}); "
                            f"add model.head={head}")
    return aux[key]


def binary_rows(x: torch.Tensor, target: torch.Tensor, sign_table: torch.Tensor, offset_table: torch.Tensor | None,
                weights: torch.Tensor | None, want_grad: bool = True):
    """``sum_k w_k softplus(sign_k x_k + offset_k)`` per row, and its closed-form gradient
    ``w sign sigmoid(sign x + offset)``: ``(values [B], grad [B, K] or None)``.

    ``sign`` is -1 where the binary target is 1 (``y > k``) and +1 where it is 0:
    ``softplus(-x) = -log sigmoid(x)`` and ``softplus(x) = -log sigmoid(-x)`` are the binary
    cross-entropies with logits, each one stable pass (``softplus(x) - t x`` would cancel in
    float32 for large x and t = 1). A task that does not see the sample (CORN) has sign 0 and
    offset -inf: ``softplus(-inf) = sigmoid(-inf) = 0``, no term and no gradient, without a
    mask. ``x [B, K]`` detached, ``target [B]``; ``sign_table``, ``offset_table`` ``[K+1, K]``
    (``_task_tables``, rows picked by the label; ``offset_table`` None for CORAL), ``weights [K]``
    or None.
    """
    sign = sign_table.index_select(0, target)
    u = x * sign if offset_table is None else torch.addcmul(offset_table.index_select(0, target), x, sign)
    terms = F.softplus(u)
    if weights is not None:
        terms = terms * weights
    grad = None
    if want_grad:
        grad = torch.sigmoid(u).mul_(sign)
        if weights is not None:
            grad = grad.mul_(weights)
    return terms.sum(dim=1), grad


@fused.kernel_of(binary_rows)
def binary_rows_kernel(x: torch.Tensor, target: torch.Tensor, sign_table: torch.Tensor,
                       offset_table: torch.Tensor | None, weights: torch.Tensor | None, want_grad: bool = True):
    """``binary_rows`` as one CPU kernel (``cpu_kernels.cpp``): signs and CORN's unseen tasks come
    from the label directly, no table rows are gathered."""
    return kernels.values_and_grad("binary_rows", x, target, weights, offset_table is not None, want_grad=want_grad,
                                   bound=x.shape[1] + 1)


def _task_tables(tasks: int, device, dtype, conditional: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per label y (rows ``0..K``) and task k (columns): the sign (-1 where ``y > k``, +1 where
    ``y <= k``) and, with ``conditional`` (CORN), the offset (0 where task k sees label y, i.e.
    ``k <= y``; -inf, with sign 0, where it does not). Rows are picked per batch with one
    ``index_select``: the tables depend on the label only."""
    k = torch.arange(tasks, device=device)
    y = torch.arange(tasks + 1, device=device)[:, None]
    sign = torch.where(k < y, -1.0, 1.0).to(dtype)
    if not conditional:
        return sign, None
    unseen = k > y
    return sign.masked_fill(unseen, 0.0), torch.zeros_like(sign).masked_fill(unseen, float("-inf"))


def _check_head(cls, head: str | None) -> None:
    """A head loss's ``head`` argument names the output layer it trains (the configs set it, and
    ``model.head`` follows it by interpolation): only its own head is accepted."""
    if head is not None and head != cls.needs_head:
        raise ValueError(f"loss={cls.registry_name} trains model.head={cls.needs_head}, got head={head!r}")


class _HeadLoss(ClassificationLoss):
    """A loss on the native outputs of a non-softmax ordinal head (``needs_head``).

    Args:
        head: the output layer it trains (``needs_head``; the configs set it so that
            ``model.head`` follows the loss); None is the same.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'``.
    """

    task_kinds = ("ordinal", "multiclass")
    order_sensitive = True
    needs_head: str = ""
    conditional = False

    def __init__(self, head: str | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        _check_head(type(self), head)
        self._tables: dict[tuple[torch.device, int, torch.dtype], tuple] = {}

    def task_tables(self, tasks: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The sign (and CORN's offset) tables ``[K+1, K]`` (``_task_tables``, cached per K)."""
        key = (torch.device(device), tasks, dtype)
        if key not in self._tables:
            self._tables[key] = _task_tables(tasks, device, dtype, self.conditional)
        return self._tables[key]

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        with float32_region(logits.device.type):
            native = _native(aux, self.native_key, self.registry_name, self.needs_head).float()
            loss = self.head_loss(native, target)
        self.last_parts = {"main": loss.detach()} if loss.ndim == 0 else {}
        return loss


@LOSSES.register("coral", "CORAL: C-1 binary tasks y > k on a shared-weight head (model.head=coral)")
class CoralLoss(_HeadLoss):
    """CORAL loss (Cao, Mirjalili & Raschka, "Rank consistent ordinal regression for neural
    networks", Pattern Recognition Letters 2020, arXiv:1901.07884).

    ``L(s, y) = -sum_{k=0}^{C-2} w_k [1[y > k] log sigmoid(s_k) + 1[y <= k] log sigmoid(-s_k)]``

    on the head's ``cum_logits`` ``s`` ``[B, C-1]`` (``model.head=coral``: one shared weight
    vector, C-1 biases). Equals ``coral_pytorch.losses.coral_loss`` with
    ``levels = levels_from_labelbatch(y)`` (tested).

    Args:
        importance_weights: ``w_k``, one per task (C-1 values), or None (all 1).
        head: ``'coral'`` or None (the output layer it trains).
        reduction: ``'mean'`` (default) | ``'sum'`` | ``'none'`` over the batch.

    Shapes: ``logits`` (the head's log class probabilities, unused), target int64 ``[B]``,
    ``cum_logits`` ``[B, C-1]`` from the head.
    """

    needs_head = "coral"
    native_key = "cum_logits"

    def __init__(self, importance_weights: Sequence[float] | None = None, head: str | None = None,
                 reduction: str = "mean"):
        super().__init__(head, reduction)
        self.importance_weights = None if importance_weights is None else tuple(float(w) for w in importance_weights)
        if self.importance_weights is not None and not all(w >= 0 for w in self.importance_weights):
            raise ValueError(f"importance_weights must be >= 0, got {list(self.importance_weights)}")

    def head_loss(self, s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = None
        if self.importance_weights is not None:
            if len(self.importance_weights) != s.shape[1]:
                raise ValueError(f"importance_weights has {len(self.importance_weights)} values; "
                                 f"the head has {s.shape[1]} tasks (C-1)")
            weights = torch.tensor(self.importance_weights, dtype=s.dtype, device=s.device)
        per_sample = row_loss(binary_rows, s, target, *self.task_tables(s.shape[1], s.device, s.dtype), weights)[0]
        return reduce_loss(per_sample, self.reduction)


@LOSSES.register("corn", "CORN: conditional binary tasks P(y > k | y > k-1) (model.head=corn)")
class CornLoss(_HeadLoss):
    """CORN loss (Shi, Cao & Raschka, "Deep neural networks for rank-consistent ordinal
    regression based on conditional probabilities", Pattern Analysis and Applications 2023,
    arXiv:2111.08851).

    Task k (``k = 0..C-2``) is the binary question ``y > k`` asked only of the samples with
    ``y > k-1`` (all samples for ``k = 0``), on the head's ``cond_logits`` ``c`` ``[B, C-1]``:

    ``L = sum_i sum_{k <= min(y_i, C-2)} bce(c_ik, 1[y_i > k]) / sum_i (min(y_i, C-2) + 1)``

    The reduction is coral_pytorch's ``corn_loss``: the mean over all (sample, task) pairs
    used, not over samples (tested equal). ``'sum'`` is the numerator; ``'none'`` gives the
    per-sample sums ``sum_{k <= min(y_i, C-2)} bce(c_ik, .)``.

    Shapes: target int64 ``[B]``, ``cond_logits`` ``[B, C-1]`` from ``model.head=corn``.
    """

    needs_head = "corn"
    native_key = "cond_logits"
    conditional = True

    def head_loss(self, c: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # task k sees the samples with y > k-1, i.e. k <= y: min(y, C-2) + 1 tasks per sample
        per_sample = row_loss(binary_rows, c, target, *self.task_tables(c.shape[1], c.device, c.dtype), None)[0]
        if self.reduction == "mean":
            pairs = (target.clamp(max=c.shape[1] - 1) + 1).sum().clamp_min(1)
            return per_sample.sum() / pairs
        return reduce_loss(per_sample, self.reduction)


@LOSSES.register("clm", "cumulative link model: NLL of P(y <= k) = F(theta_k - g(x)) (model.head=clm)")
class ClmLoss(SoftmaxLoss):
    """Negative log-likelihood of a cumulative link model (``model.head=clm``).

    ``L = -log P(y | x)``, ``P(y = k) = F(theta_k - g(x)) - F(theta_{k-1} - g(x))`` with the
    head's link ``F`` (``model.head_link=logit|probit|cloglog``) and ordered thresholds. The
    head already returns the log class probabilities as ``logits``, so this is
    ``-log_softmax(logits)_y`` (the ``log_softmax`` renormalises rows that are already
    normalised). ``model.head=clm`` also trains with any softmax loss (``ce``, ``rps``,
    ``wk``...), which then see the CLM's class distribution; ``loss=clm`` names the pairing.

    Args:
        head: ``'clm'`` or None (the output layer it trains; ``model.head`` follows it).
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.
    """

    task_kinds = ("ordinal", "multiclass")
    order_sensitive = True
    needs_head = "clm"

    def __init__(self, head: str | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_head(type(self), head)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        return F.cross_entropy(logits, target, reduction="none")
