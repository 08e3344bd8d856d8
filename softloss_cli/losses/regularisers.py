"""Regularisers every softmax loss can add: the per-sample decisiveness penalties
(``PENALTIES``: ``qq``, ``entropy``) and the batch load-balancing term.

They live below both ``losses/base.py`` (``SoftmaxLoss.add_regularisers`` applies them)
and ``losses/confidence.py`` (the confidence scenario's public tools), so neither has to
import the other. A penalty is ``f(log_probs [B, C]) -> [B]``: it takes log-probabilities
(``log_softmax`` of finite logits is finite, while ``softmax`` underflows to exact zeros)
and returns one value per sample.
"""

from __future__ import annotations

import math

import torch

from softloss_cli.registry import Registry

__all__ = ["PENALTIES", "entropy_penalty", "load_balance", "qq_penalty"]

#: name -> per-sample penalty ``f(log_probs [B, C]) -> [B]``.
PENALTIES = Registry("penalty")


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
