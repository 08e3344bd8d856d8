"""Confidence shaping: penalties that make a softmax decisive, and a Gumbel-softmax router.

The scenario (DESIGN.md, "confidence"): a softmax over E branches routes each input and
must pick ONE branch, not a mixture. Five tools, each usable on the task's logits or on a
router's gate:

- temperature / alpha sharpening ``softmax(alpha * z)``: ``logit_scale`` of every
  ``SoftmaxLoss`` (``loss.logit_scale=4``) and ``gate_temperature`` of ``model=routed_experts``;
- the bounded penalty ``qq`` and the entropy penalty ``entropy``, registered in
  ``PENALTIES``: ``loss.penalty=qq loss.penalty_weight=0.5 loss.penalty_on=gate_logits``;
- a batch-level load-balancing term (``load_balance``, ``loss.balance_weight``) that keeps a
  decisive router from collapsing onto one expert;
- Gumbel-softmax with straight-through hard samples (``gumbel_softmax_st``) and its
  annealed temperature (``annealed_temperature``), used by the router of ``routed_experts``.

A penalty is ``f(log_probs [B, C]) -> [B]``: it takes log-probabilities (``log_softmax``
of finite logits is finite, while ``softmax`` underflows to exact zeros) and returns one
value per sample; ``SoftmaxLoss`` reduces it like the main term and adds
``penalty_weight`` times it.
"""

from __future__ import annotations

import torch

# Re-exported: the penalties and the balancing term are part of this scenario's public API.
from softloss_cli.losses.regularisers import entropy_penalty, load_balance, qq_penalty

__all__ = ["annealed_temperature", "entropy_penalty", "gumbel_softmax_st", "load_balance", "qq_penalty"]


def gumbel_softmax_st(
    logits: torch.Tensor,
    tau: float = 1.0,
    hard: bool = True,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gumbel-softmax sample, with straight-through hard one-hot samples when ``hard``.

    ``y_soft = softmax((z + g) / tau)`` with ``g_c = -log(-log U_c)``, ``U_c ~ U(0, 1)``
    i.i.d. (Jang, Gu & Poole 2016, https://arxiv.org/abs/1611.01144; Maddison et al.
    2016, https://arxiv.org/abs/1611.00712). ``argmax y_soft`` is an exact sample of
    ``Categorical(softmax(z))`` whatever ``tau``. With ``hard=True`` the forward value is
    the one-hot of that argmax and the backward pass uses ``y_soft``'s gradient (the
    straight-through estimator): ``y = onehot + (y_soft - y_soft.detach())``, which is
    exactly one-hot in the forward pass (``torch.nn.functional.gumbel_softmax`` computes
    ``onehot - y_soft.detach() + y_soft``, which is one-hot only up to rounding).

    Our choices: computed in float32 with autocast off; ``U`` is clamped to
    ``[tiny, 1 - eps/2]`` so that both logarithms stay finite (``torch.rand`` can return 0,
    which gives an infinite ``g`` and a NaN softmax); ``generator`` makes a sample
    reproducible in tests.

    Args:
        logits: ``[..., E]`` unnormalised log-probabilities of the categories.
        tau: temperature > 0 of the relaxation (lower: closer to one-hot, noisier gradients).
        hard: return straight-through one-hot samples (else the relaxed ``y_soft``).
        dim: the category dimension.
        generator: optional ``torch.Generator`` on ``logits``' device.

    Returns a float32 tensor of ``logits``' shape whose slices along ``dim`` sum to 1.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.float()
        u = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        u = u.clamp(torch.finfo(z.dtype).tiny, 1.0 - torch.finfo(z.dtype).eps / 2)
        y_soft = torch.softmax((z - torch.log(-torch.log(u))) / tau, dim=dim)
        if not hard:
            return y_soft
        index = y_soft.argmax(dim=dim, keepdim=True)
        y_hard = torch.zeros_like(y_soft).scatter_(dim, index, 1.0)
        return y_hard + (y_soft - y_soft.detach())


def annealed_temperature(epoch: int, num_epochs: int, start: float = 1.0, end: float = 0.5) -> float:
    """Geometric annealing ``tau_e = start * (end / start) ** (e / (E - 1))`` for epoch ``e`` of ``E``.

    ``start`` at the first epoch, ``end`` at the last (``start`` throughout when ``E = 1``).
    Jang et al. 2016 (https://arxiv.org/abs/1611.01144) anneal ``max(0.5, exp(-r t))`` per
    step; a geometric per-epoch schedule between two named values is easier to set from a
    config and does not depend on the number of steps. Per epoch, not per step, so that a
    resumed run recomputes it from the epoch alone.
    """
    if not (start > 0 and end > 0):
        raise ValueError(f"temperatures must be > 0, got start={start}, end={end}")
    if num_epochs <= 1:
        return float(start)
    t = min(max(epoch, 0), num_epochs - 1) / (num_epochs - 1)
    return float(start * (end / start) ** t)
