"""The loss interface the trainer sees, and the softmax-loss base every softmax family shares.

Contract (DESIGN.md): a loss is an ``nn.Module``; ``forward(logits, target, **aux)``
takes logits ``[B, C]`` (any dtype; computed in float32 with autocast off), the
targets of its task kind, optional auxiliary outputs of the model (``aux_logits``,
``gate_logits``...), and returns a scalar. After each call ``last_parts`` holds the
detached terms (``main``, ``penalty``...) for logging, without a host sync; terms that take
extra work (means over a side of the batch) are computed when read (``LazyParts``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, MutableMapping

import torch
from torch import nn

from softloss_cli.losses import fused
from softloss_cli.losses.regularisers import PENALTIES, load_balance
from softloss_cli.registry import Registry

REDUCTIONS = ("mean", "sum", "none")

#: name -> loss class; filled by the ``@LOSSES.register`` decorators of each family module.
LOSSES = Registry("loss")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def reduce_loss(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Mean or sum over the batch, or the per-sample vector for ``'none'``.

    On the CPU the mean is taken as ``sum / n`` (the same bits as ``mean()`` there, tested): its
    backward hands the rows one expanded value (a stride-0 vector), which ``RowLossWithGrad``
    reads as a single number, where ``mean()``'s backward writes a ``[B]`` vector of ``1/B``.
    On a GPU ``mean()`` stays one kernel (the division would be a second launch).
    """
    if reduction == "mean":
        if per_sample.device.type == "cpu":
            return per_sample.sum() / per_sample.numel()
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class LazyParts(MutableMapping):
    """A loss's ``last_parts``: name -> detached 0-dim tensor, where a term may be given as a
    function that computes it (``later``), run on first read and then kept.

    The trainer reads the parts every ``trainer.log_every`` steps (50 by default): a batch mean
    over one side of the batch is a handful of small tensor ops, each a few microseconds, which
    at C = 30 added up to a third of a loss's own time when computed on every step.
    """

    def __init__(self, values: dict | None = None):
        self._values: dict = dict(values or {})

    def later(self, name: str, compute: Callable[[], torch.Tensor]) -> None:
        """Set ``name`` to ``compute()``, evaluated when the part is first read."""
        self._values[name] = compute

    def merge(self, parts: dict) -> None:
        """Add ``parts``: tensors as they are, functions as ``later`` terms."""
        for name, part in parts.items():
            self._values[name] = part

    def __getitem__(self, name: str) -> torch.Tensor:
        value = self._values[name]
        if not isinstance(value, torch.Tensor):
            value = self._values[name] = value()
        return value

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._values[name] = value

    def __delitem__(self, name: str) -> None:
        del self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"LazyParts({dict(self)!r})"


class ClassificationLoss(nn.Module):
    """Base class: what a loss accepts and how its outputs become scores.

    Class attributes a loss sets:
        task_kinds: the task kinds it trains on (checked before training).
        activation: ``'softmax'`` or ``'sigmoid'``: how metrics turn its logits into scores.
        needs_aux: it needs a second head (``model.heads=two``), passed as ``aux_logits``.
        set_source: which output Average-K sets are read from (``'logits'`` or ``'aux_logits'``).
        clip_advice: None, or why this loss should train with gradient clipping: the
            trainer warns with it when ``trainer.grad_clip`` is off.
    """

    task_kinds: tuple[str, ...] = ("multiclass", "ordinal")
    activation: str = "softmax"
    needs_aux: bool = False
    set_source: str = "logits"
    clip_advice: str | None = None

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.last_parts: MutableMapping[str, torch.Tensor] = LazyParts()

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook for schedules inside a loss (annealed temperatures); default: nothing."""


def float32_region(device_type: str):
    """A context in which ops run in their inputs' dtype: ``torch.autocast(device_type,
    enabled=False)`` where autocast is on (or under ``torch.compile``, which traces it), else a
    no-op (entering and leaving autocast costs about 7 us, a few percent of a loss at C = 30)."""
    if torch.compiler.is_compiling() or torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def scaled_float(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """``float32(logits) * scale``, without the multiply (a pass over ``B x C``, forward and
    backward) when ``scale`` is 1."""
    z = logits.float()
    return z if scale == 1.0 else z * scale


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
        balance_weight: weight of the batch load-balancing term (``confidence.load_balance``,
            ``E * sum_e f_e P_e``) on the same ``penalty_on`` output; 0 (default) = off.
            One scalar per batch: with ``reduction='none'`` it is added to every sample.
        reduction: ``'mean'`` (default) | ``'sum'`` | ``'none'`` over the batch.
    """

    def __init__(
        self,
        logit_scale: float = 1.0,
        penalty: str | None = None,
        penalty_weight: float = 0.0,
        penalty_on: str = "logits",
        balance_weight: float = 0.0,
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
        if balance_weight < 0:
            raise ValueError(f"balance_weight must be >= 0, got {balance_weight}")
        self.balance_weight = float(balance_weight)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        raise NotImplementedError

    def _penalty_source(self, aux: dict) -> torch.Tensor:
        if self.penalty_on not in aux:
            from softloss_cli.errors import SoftlossError

            given = ", ".join(["logits", *sorted(aux)])
            raise SoftlossError(f"loss.penalty_on={self.penalty_on}: the model gives no such output; "
                                f"this model's outputs: {given}")
        return aux[self.penalty_on]

    def add_regularisers(self, loss: torch.Tensor, z: torch.Tensor, aux: dict, reduce, parts: dict) -> torch.Tensor:
        """``loss + penalty_weight * reduce(penalty) + balance_weight * load_balance`` on the
        ``penalty_on`` output (float32 logits ``z`` or an auxiliary output); records both terms
        in ``parts``. ``reduce`` turns the per-sample penalty ``[B]`` into the loss's reduction."""
        if self.penalty_fn is None and not self.balance_weight:
            return loss
        source = z if self.penalty_on == "logits" else self._penalty_source(aux).float()
        log_probs = torch.log_softmax(source, dim=-1)
        if self.penalty_fn is not None:
            pen = reduce(self.penalty_fn(log_probs))
            parts["penalty"] = pen.detach()
            loss = loss + self.penalty_weight * pen
        if self.balance_weight:
            balance = load_balance(log_probs)
            parts["balance"] = balance.detach()
            loss = loss + self.balance_weight * balance
        return loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        # float32 with autocast off: bf16/fp16 log-probabilities underflow and give inf/NaN.
        with float32_region(logits.device.type):
            z = scaled_float(logits, self.logit_scale)
            aux32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in aux.items()}
            main = reduce_loss(self.per_sample(z, target, **aux32), self.reduction)
            parts = LazyParts({"main": main.detach()})
            loss = self.add_regularisers(main, z, aux32, lambda v: reduce_loss(v, self.reduction), parts)
        self.last_parts = parts
        return loss


# ---------------------------------------------------------------- fused losses with hand-derived gradients


class RowLossWithGrad(torch.autograd.Function):
    """Attach precomputed gradients to per-sample loss values, for one input or several.

    ``apply(values [B], scales, z_1, ..., z_n, grad_1, ..., grad_n)`` returns ``values`` (a
    copy) whose gradient with respect to ``z_j [B, C_j]`` is ``scales[j] * grad_j * g[:, None]``
    for an upstream gradient ``g [B]`` (``scales`` save a pass over a ``grad`` with a constant
    factor; a ``grad_j`` of None gives ``z_j`` no gradient). The losses below compute
    ``grad = d values_i / d z_i`` in closed form in the same pass as the values, so backward is
    one multiply per input instead of one autograd node per tensor op; a loss of two heads
    (``two_head``) is one node. The grads are treated as constants (no double backward), and
    the node owns them: nothing else may read or keep them after the call, as backward may
    scale them in place and hand them on as the inputs' gradients.
    """

    @staticmethod
    def forward(ctx, values, scales, *inputs_and_grads):  # noqa: D102
        ctx.save_for_backward(*inputs_and_grads[len(scales):])
        ctx.scales = scales
        return values.clone()

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        # Every row has the same upstream gradient (a mean or a sum expands one value; a batch
        # loss has one row): one multiply by a scalar, several times faster than a broadcast.
        same = g.numel() == 1 or (g.dim() == 1 and g.stride(0) == 0)
        # On the CPU that value is read as a number: one multiply by a Python scalar, no tensor
        # op for the factor (on a GPU, reading it would wait for the device; under torch.compile
        # it would break the traced graph).
        as_number = g.device.type == "cpu" and not torch.compiler.is_compiling()
        factor = None
        if same:
            first = g.reshape(-1)[0]
            factor = first.item() if as_number else first
        # The saved grads are fresh tensors only this node holds. When autograd frees the graph
        # after this call (no retain_graph), scale them in place and hand them on: no [B, C]
        # allocation (whose pages the allocator may have returned to the system) and no copy;
        # a factor of 1 (a batch loss, a sum) costs nothing. torch's own compiled backward
        # reuses saved buffers under the same test (aot_autograd's donated buffers).
        grads = ctx.saved_tensors
        donate = as_number and same and not torch._C._autograd._get_current_graph_task_keep_graph()
        if donate and len(grads) > 1:  # one tensor saved for two inputs is not scaled in place
            ptrs = [g_.data_ptr() for g_ in grads if g_ is not None]
            donate = len(set(ptrs)) == len(ptrs)
        outs = []
        for grad, scale in zip(grads, ctx.scales):
            if grad is None:
                outs.append(None)
            elif same:
                f = factor if scale == 1.0 else factor * scale
                if donate and grad.is_contiguous():
                    outs.append(grad if f == 1.0 else grad.mul_(f))
                else:
                    outs.append(grad * f)
            else:
                outs.append(grad * (g if scale == 1.0 else g * scale)[:, None])
        return (None, None, *outs, *([None] * len(outs)))


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will want a gradient for any of ``tensors`` (skip computing it otherwise)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def with_grad(z: torch.Tensor, values: torch.Tensor, grad: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
    """``values`` carrying the gradient ``scale * grad`` w.r.t. ``z`` (``values`` as is when ``grad`` is None)."""
    if grad is None:
        return values
    return RowLossWithGrad.apply(values, (scale,), z, grad)


def with_grads(values: torch.Tensor, *terms: tuple[torch.Tensor, torch.Tensor | None, float]) -> torch.Tensor:
    """``values`` carrying the gradient ``scale * grad`` w.r.t. each ``z`` of ``terms``
    (``(z, grad, scale)`` triples; one autograd node for all of them)."""
    terms = tuple(t for t in terms if t[1] is not None)
    if not terms:
        return values
    zs, grads, scales = zip(*terms)
    return RowLossWithGrad.apply(values, tuple(float(s) for s in scales), *zs, *grads)


def row_loss(fn, z: torch.Tensor, *args, scale: float = 1.0, **kwargs):
    """Run a closed-form row function and attach its gradient: ``(values [B] with gradient, *extras)``.

    ``fn(z.detach(), *args, want_grad=..., **kwargs)`` returns ``(values [B], grad [B, C] or
    None, *extras)`` with ``grad = d values_i / d z_i`` (times ``1 / scale``); it runs through
    ``fused.call`` (compiled into few kernels where that pays, else eagerly). ``want_grad`` is
    False when autograd needs no gradient of ``z`` (evaluation), so ``fn`` skips it.
    """
    values, grad, *extras = fused.call(fn, z.detach(), *args, want_grad=needs_grad(z), **kwargs)
    return (with_grad(z, values, grad, scale), *extras)


#: below this, ``sum_{k != i} p_k`` is recomputed in the log domain (its terms may have underflowed).
LOO_UNDERFLOW = 1e-20


def log1m_softmax_at(log_p: torch.Tensor, p: torch.Tensor, index: torch.Tensor, all_rows: bool | None = None):
    """``log(1 - p_i)`` per row at the class ``index[b]``, exact for any logits.

    Args:
        log_p, p: ``log_softmax`` of the logits and its ``exp``, ``[B, C]`` (``p`` is modified
            in place and restored).
        index: int64 ``[B]``.

    Returns ``(log1m [B], rest [B], need [B] bool, rows [R], v [R, C])``: ``rest = sum_{k != i}
    p_k = 1 - p_i`` without rounding (``log1m`` is ``log1p(-p_i)`` where ``p_i <= 1/2`` and
    ``log(rest)`` above); where ``rest < LOO_UNDERFLOW`` (``need``) its terms may have
    underflowed, and ``log1m`` is the leave-one-out ``logsumexp_{k != i} log_p_k`` instead,
    computed for the rows ``rows`` (those rows on CPU, eagerly), or with ``all_rows`` (default:
    on other devices, so that no host sync is needed, and under ``torch.compile``, which wants
    no data-dependent shape) for every row, ``rows`` then None; ``v`` holds ``p_k / (1 - p_i)``
    for ``k != i`` (0 at ``i``) on those rows, for gradients.
    """
    if all_rows is None:
        all_rows = p.device.type != "cpu" or torch.compiler.is_compiling()
    idx = index[:, None]
    p_i = p.gather(1, idx).squeeze(1)
    p.scatter_(1, idx, 0.0)
    rest = p.sum(dim=1)
    p.scatter_(1, idx, p_i[:, None])
    log1m = torch.where(p_i <= 0.5, torch.log1p(-p_i), torch.log(rest))
    need = rest < LOO_UNDERFLOW
    if all_rows:
        masked = log_p.scatter(1, idx, float("-inf"))
        loo = torch.logsumexp(masked, dim=1)
        v = masked.sub_(loo[:, None]).exp_()
        return torch.where(need, loo, log1m), rest, need, None, v
    rows = need.nonzero().squeeze(1)
    v = None
    if rows.numel():
        masked = log_p.index_select(0, rows).scatter_(1, idx.index_select(0, rows), float("-inf"))
        loo = torch.logsumexp(masked, dim=1)
        v = masked.sub_(loo[:, None]).exp_()
        log1m.index_copy_(0, rows, torch.where(need.index_select(0, rows), loo, log1m.index_select(0, rows)))
    return log1m, rest, need, rows, v
