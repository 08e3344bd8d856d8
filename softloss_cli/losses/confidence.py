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

import math

import torch

from softloss_cli.losses.base import PENALTIES

__all__ = ["annealed_temperature", "entropy_penalty", "gumbel_softmax_st", "load_balance", "qq_penalty"]


def _finite_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """float32 log-probabilities with -inf replaced by the most negative finite float.

    ``log_softmax`` of finite logits is finite; a -inf logit (a masked class) gives -inf,
    and ``0 * -inf`` would turn values and gradients into NaN. Clamping maps it to a
    finite value whose probability is exactly 0 and whose gradient is 0.
    """
    lp = log_probs.float()
    return lp.clamp_min(torch.finfo(lp.dtype).min)


def qq_penalty(log_probs: torch.Tensor) -> torch.Tensor:
    """Bounded decisiveness penalty ``sum_c (q_c - q_c^2)`` with ``q = p ** (log 2 / log C)``.

    ``q - q^2`` peaks at ``q = 1/2``; the exponent ``log 2 / log C`` maps ``p = 1/C`` to
    ``q = 1/2``, so every term is maximal at the uniform distribution, where the penalty
    is ``C / 4`` (its maximum: each term is at most 1/4), and the penalty is exactly 0 at
    a one-hot ``p``. Unlike the entropy it is bounded by ``C / 4`` whatever the
    distribution, and its gradient vanishes at both ends, so it shapes without
    exploding. Multiply by ``alpha`` (``penalty_weight``) to get ``alpha * sum_c (q_c - q_c^2)``.

    Our choices: ``q = exp(a * log p)`` is computed from log-probabilities so that ``p = 0``
    gives ``q = 0`` with a zero (never NaN) gradient (``p ** a`` has an infinite
    derivative at 0 for ``a < 1``); with ``C = 1`` (``log C = 0``) the penalty is 0 (one
    class is always one-hot). The formula is the issue's specification, not a paper's.

    Args:
        log_probs: ``[B, C]`` log-probabilities (``log_softmax`` of the logits), any float dtype.

    Returns ``[B]`` float32 values in ``[0, C/4]``.
    """
    lp = _finite_log_probs(log_probs)
    c = lp.shape[-1]
    if c < 2:
        return lp.sum(dim=-1) * 0.0  # keeps the graph (and the device) with a zero value
    q = torch.exp(lp * (math.log(2.0) / math.log(c)))
    return (q - q * q).sum(dim=-1)


def entropy_penalty(log_probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``H(p) = -sum_c p_c log p_c`` (nats), to be *minimised*.

    Added to a loss with a positive weight (``alpha * H(p)``) it pushes ``p`` towards a
    one-hot vector: entropy minimisation (Grandvalet & Bengio, NeurIPS 2004). This is the
    opposite sign of the "confidence penalty" of Pereyra et al. 2017
    (https://arxiv.org/abs/1701.06548), which *subtracts* ``beta * H`` to soften outputs;
    a negative ``penalty_weight`` gives theirs.

    Computed as ``-sum_c exp(lp_c) * lp_c`` from log-probabilities, with ``0 * log 0 = 0``
    (values and gradients stay finite when a ``p_c`` underflows to 0). The value is
    bounded (``0 <= H <= log C``) but its gradient with respect to ``p`` grows like
    ``log p`` near the simplex corners, so a large weight can dominate the task loss.

    Args:
        log_probs: ``[B, C]`` log-probabilities, any float dtype.

    Returns ``[B]`` float32 values in ``[0, log C]``.
    """
    lp = _finite_log_probs(log_probs)
    return -(torch.exp(lp) * lp).sum(dim=-1)


def load_balance(log_probs: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's load-balancing term ``E * sum_e f_e * P_e`` over a batch (a scalar).

    ``P_e = mean_b p_be`` is the mean routing probability of expert e and ``f_e`` the share of
    the batch whose argmax route is e (a count: no gradient flows through it), as in Fedus et
    al., https://arxiv.org/abs/2101.03961, eq. 4. It is 1 when the batch is spread evenly
    over the E experts and E when every sample goes to one expert; its gradient lowers the
    probability of the busiest experts. A per-sample decisiveness pressure (``qq``,
    ``entropy``, a low temperature) alone can be met by sending every sample to the same
    expert (a collapsed router); with this term the cheapest decisive gate is one that
    splits the batch, so the experts must specialise.

    Args:
        log_probs: ``[B, E]`` log-probabilities of the gate, any float dtype.

    Returns a float32 scalar in ``[1, E]`` (0 for an empty batch).
    """
    lp = _finite_log_probs(log_probs)
    b, e = lp.shape
    if b == 0:
        return lp.sum() * 0.0
    p = torch.exp(lp)
    f = torch.bincount(lp.detach().argmax(dim=-1), minlength=e).to(p.dtype) / b
    return e * torch.dot(f, p.mean(dim=0))


PENALTIES.register("qq", "bounded penalty sum(q - q^2), q = p^(log 2/log C): max at uniform, 0 at one-hot")(qq_penalty)
PENALTIES.register("entropy", "entropy H(p) to minimise: pushes p towards one-hot")(entropy_penalty)


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
