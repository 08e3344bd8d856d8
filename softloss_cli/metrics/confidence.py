"""Decisiveness metrics for any softmax, and gate/route metrics for routed models.

``mean_max_prob`` and ``mean_entropy`` live in ``metrics/classification.py`` (every
single-label split reports them); this family adds:

- ``decisive_share_90`` / ``decisive_share_99``: share of samples whose max probability
  is at least 0.9 / 0.99;
- for a model that outputs ``gate_logits`` (``model=routed_experts``): the same
  decisiveness numbers for the gate (``gate_decisive_share_90/99``,
  ``gate_mean_max_prob``, ``gate_mean_entropy``);
- for a model that also outputs ``hard_logits`` (the argmax expert alone):
  ``soft_route_acc`` (accuracy of the gate-weighted mixture), ``hard_route_acc``,
  ``hard_route_gap = soft_route_acc - hard_route_acc`` and ``route_agreement`` (share of
  samples where both routes predict the same class);
- ``route_active_experts``: how many experts the hard route really uses (the perplexity
  of the route histogram: 1 when the router collapses onto one expert, E when balanced);
- when the data knows each sample's family (``extras['family']``, ``data=routing_images``):
  ``route_purity``, how purely each expert receives a single family.

Pure functions over whole-split tensors, float64 where sums matter; argument checks
raise ``ValueError`` (skipped with ``validate_args=False``).
"""

from __future__ import annotations

import torch

from softloss_cli.metrics import EvalOutputs, metric_group
from softloss_cli.metrics.classification import accuracy, mean_entropy, mean_max_prob, normalise_rows

__all__ = ["active_experts", "confidence_metrics", "decisive_share", "route_purity"]

THRESHOLDS = {"90": 0.9, "99": 0.99}


def _check_probs(probs, name: str = "probs") -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating-point tensor [N, C], got "
                         f"{getattr(probs, 'shape', type(probs).__name__)}")
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(probs.shape)})")
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name} must be finite")
    if probs.min().item() < 0.0 or probs.max().item() > 1.0:
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    gap = (probs.to(torch.float64).sum(dim=1) - 1.0).abs().max().item()
    if gap > max(1e-3, torch.finfo(probs.dtype).eps):
        raise ValueError(f"{name} rows must sum to 1 (max |row sum - 1| = {gap:.3g})")


def decisive_share(probs: torch.Tensor, threshold: float = 0.9, *, validate_args: bool = True) -> float:
    """Share of decisive predictions: ``(1/N) sum_i 1[max_c p_ic >= t]``.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        threshold: t in (0, 1]; the comparison is ``>=`` on the values as given, so a
            float32 0.9 (0.89999998) falls just below t = 0.9.
        validate_args: check shape, range, row sums and t first.

    Returns a float in [0, 1]. With ``C = 1`` every sample is decisive.
    """
    if validate_args:
        _check_probs(probs)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return (probs.detach().to(torch.float64).amax(dim=1) >= threshold).to(torch.float64).mean().item()


def active_experts(route: torch.Tensor, num_experts: int) -> float:
    """Effective number of experts used: ``exp(H(u))`` with ``u_e = (1/N) #{i : route_i = e}``.

    The perplexity of the route histogram, in [1, E]: 1 when every sample goes to the same
    expert (a collapsed router, decisive but useless), E when the experts share the samples
    equally. ``0 log 0 = 0``. Args: ``route [N]`` integer expert indices in ``[0, E)``;
    ``num_experts`` E. Computed in float64.
    """
    if not isinstance(route, torch.Tensor) or route.ndim != 1 or route.numel() == 0 or route.is_floating_point():
        raise ValueError("route must be a non-empty 1-D integer tensor")
    if route.min().item() < 0 or route.max().item() >= num_experts:
        raise ValueError(f"route indices must be in [0, {num_experts - 1}]")
    u = torch.bincount(route.long(), minlength=num_experts).to(torch.float64) / route.numel()
    return torch.exp(-torch.special.xlogy(u, u).sum()).item()


def route_purity(route: torch.Tensor, family: torch.Tensor, *, validate_args: bool = True) -> float:
    """Purity of the routes with respect to the true families (clustering purity), in (0, 1].

    ``purity = (1/N) sum_e max_f n_{f,e}``, where ``n_{f,e}`` counts the samples of family f
    routed to expert e: 1 when every expert receives a single family; a router that
    collapses onto one expert scores the largest family's share (about 1/E), and one that
    merges two families into an expert loses the smaller one's share. Splitting one family
    across two experts is not penalised (each expert still sees one family).

    Args:
        route: ``[N]`` integer expert index per sample (argmax of the gate).
        family: ``[N]`` integer true family per sample.
        validate_args: check shapes, dtypes and signs first.
    """
    if validate_args:
        for name, t in (("route", route), ("family", family)):
            if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool:
                raise ValueError(f"{name} must be a 1-D integer tensor")
        if route.shape != family.shape or route.numel() == 0:
            raise ValueError(f"route and family must have the same non-zero length, got {route.numel()} and {family.numel()}")
        if route.min().item() < 0 or family.min().item() < 0:
            raise ValueError("route and family indices must be >= 0")
    r, f = route.long(), family.long()
    n_families = int(f.max().item()) + 1
    counts = torch.bincount(r * n_families + f, minlength=(int(r.max().item()) + 1) * n_families)
    return (counts.view(-1, n_families).amax(dim=1).sum() / r.numel()).item()


@metric_group("multiclass", "ordinal")
def confidence_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None) -> dict[str, float]:
    """``decisive_share_90/99`` for every single-label split; gate and route metrics when
    the model outputs ``gate_logits`` / ``hard_logits`` (see the module docstring).

    Output probabilities are ``outputs.scores`` with rows normalised (sigmoid scores do not
    sum to 1); the gate's are ``softmax(gate_logits)`` in float64 (``routed_experts``
    outputs the effective gate logits, temperature included). ``reference`` is unused.
    """
    probs = normalise_rows(outputs.scores)
    _check_probs(probs, "scores")
    result = {f"decisive_share_{k}": decisive_share(probs, t, validate_args=False) for k, t in THRESHOLDS.items()}

    gate_logits = outputs.aux.get("gate_logits")
    if gate_logits is not None:
        if gate_logits.ndim != 2 or gate_logits.shape[0] != probs.shape[0]:
            raise ValueError(f"gate_logits must be [N, E] with N = {probs.shape[0]}, got {tuple(gate_logits.shape)}")
        if not torch.isfinite(gate_logits).all():
            raise ValueError("gate_logits must be finite")
        gate = torch.softmax(gate_logits.to(torch.float64), dim=1)
        result.update({f"gate_decisive_share_{k}": decisive_share(gate, t, validate_args=False) for k, t in THRESHOLDS.items()})
        result["gate_mean_max_prob"] = mean_max_prob(gate, validate_args=False)
        result["gate_mean_entropy"] = mean_entropy(gate, validate_args=False)
        result["route_active_experts"] = active_experts(gate.argmax(dim=1), gate.shape[1])
        family = outputs.extras.get("family")
        if family is not None:
            result["route_purity"] = route_purity(gate.argmax(dim=1), family)

    hard_logits = outputs.aux.get("hard_logits")
    if hard_logits is not None:
        if hard_logits.shape != outputs.logits.shape:
            raise ValueError(f"hard_logits must match logits {tuple(outputs.logits.shape)}, got {tuple(hard_logits.shape)}")
        targets = outputs.targets
        soft = accuracy(outputs.logits, targets)
        hard = accuracy(hard_logits, targets)
        result.update(soft_route_acc=soft, hard_route_acc=hard, hard_route_gap=soft - hard)
        agree = outputs.logits.argmax(dim=1) == hard_logits.argmax(dim=1)
        result["route_agreement"] = agree.to(torch.float64).mean().item()
    return result
