"""Routed experts: a shared trunk, a softmax gate over E experts and E expert heads.

The model of the "confidence" scenario (DESIGN.md): a softmax of attention weights
selects downstream branches and should pick ONE. Training mixes the experts' logits with
the gate's weights; evaluation also reports the hard route (only the argmax expert), so
the metrics can show how much a non-decisive gate relies on mixing
(``hard_route_gap`` in ``metrics/confidence.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from softloss_cli.errors import SoftlossError
from softloss_cli.losses.confidence import annealed_temperature, gumbel_softmax_st
from softloss_cli.models.registry import MODELS
from softloss_cli.models.small_cnn import conv_block

__all__ = ["RoutedExperts"]

ROUTERS = ("softmax", "gumbel_st")


@MODELS.register("routed_experts", "shared trunk + softmax/Gumbel gate over E expert heads (soft mix or hard route)")
class RoutedExperts(nn.Module):
    """Trunk -> features ``f``; gate ``g = softmax(W_g f / T)`` over E experts; expert heads
    ``h_e(f)``; output ``sum_e g_e h_e(f)`` (a gate-weighted mixture of expert *logits*).

    Outputs (a dict, see DESIGN.md "Model output"):
        ``logits`` ``[B, C]``: the soft mixture (training and evaluation);
        ``gate_logits`` ``[B, E]``: the gate's effective logits ``W_g f / T``, so that
        ``softmax(gate_logits)`` is exactly the routing distribution the mixture uses
        (a penalty with ``loss.penalty_on=gate_logits`` and the ``gate_*`` metrics see it);
        ``hard_logits`` ``[B, C]`` (evaluation only): the logits of the argmax expert alone;
        ``aux_logits`` ``[B, C]`` with ``heads='two'``: a separate linear head on the trunk's
        features (not routed), as the second head of every other model.

    Routers:
        ``softmax``: the mixture weights are ``softmax(gate_logits)``.
        ``gumbel_st``: in training, the weights are a straight-through one-hot
        Gumbel-softmax sample (``losses/confidence.py:gumbel_softmax_st``) with a temperature
        annealed per epoch from ``gumbel_tau_start`` to ``gumbel_tau_end``: each sample is
        routed to one expert, drawn from the gate's distribution, and the gate learns from
        the relaxed sample's gradient. ``gumbel_hard=False`` uses the relaxed sample
        ``softmax((gate_logits + g) / tau)`` itself (a noisy soft mixture, no straight-through).
        At evaluation there is no noise: ``logits`` is the soft mixture, ``hard_logits`` the
        argmax route, as for ``softmax``.

    Args:
        input_shape: ``(C, H, W)`` images (conv trunk of ``small_cnn`` blocks) or ``(D,)``
            vectors (MLP trunk of the same widths).
        num_classes: C.
        num_experts: E >= 1 (default 4).
        channels: trunk widths (conv channels per block, or MLP hidden sizes).
        expert_hidden: hidden width of each expert (Linear-ReLU-Linear); 0 = linear experts.
        router: ``softmax`` | ``gumbel_st``.
        gate_temperature: T > 0 of the gate softmax; T < 1 sharpens (alpha = 1/T).
        gumbel_tau_start, gumbel_tau_end: annealed Gumbel temperature (``gumbel_st`` only).
        gumbel_hard: straight-through one-hot samples (default) or the relaxed sample
            (``gumbel_st`` only).
        dropout: dropout on the features before the gate and the experts.
        heads: ``one`` | ``two`` (adds ``aux_logits``, e.g. for ``loss=two_head``).

    Every expert is computed for every sample (one batched matmul per layer, no loop over
    experts): with a handful of small heads this is cheaper than gathering samples per
    expert, and the mixture needs them all anyway.
    """

    def __init__(
        self,
        input_shape,
        num_classes: int,
        num_experts: int = 4,
        channels=(32, 64, 128),
        expert_hidden: int = 64,
        router: str = "softmax",
        gate_temperature: float = 1.0,
        gumbel_tau_start: float = 1.0,
        gumbel_tau_end: float = 0.5,
        gumbel_hard: bool = True,
        dropout: float = 0.0,
        heads: str = "one",
    ):
        super().__init__()
        if heads not in ("one", "two"):
            raise SoftlossError(f"model.heads must be one of one, two, got {heads!r}")
        if router not in ROUTERS:
            raise SoftlossError(f"model.router must be one of {', '.join(ROUTERS)}, got {router!r}")
        if int(num_experts) < 1:
            raise SoftlossError(f"model.num_experts must be >= 1, got {num_experts}")
        if not gate_temperature > 0:
            raise SoftlossError(f"model.gate_temperature must be > 0, got {gate_temperature}")
        if not (gumbel_tau_start > 0 and gumbel_tau_end > 0):
            raise SoftlossError(f"model.gumbel_tau_start and gumbel_tau_end must be > 0, got {gumbel_tau_start}, {gumbel_tau_end}")
        if int(expert_hidden) < 0:
            raise SoftlossError(f"model.expert_hidden must be >= 0, got {expert_hidden}")
        self.num_classes, self.num_experts = int(num_classes), int(num_experts)
        self.router, self.gate_temperature = router, float(gate_temperature)
        self.tau_start, self.tau_end = float(gumbel_tau_start), float(gumbel_tau_end)
        self.tau = self.tau_start
        self.gumbel_hard = bool(gumbel_hard)
        self.expert_hidden = int(expert_hidden)

        self.features, width = _trunk(tuple(input_shape), tuple(int(c) for c in channels))
        self.dropout = nn.Dropout(dropout)
        self.gate = nn.Linear(width, self.num_experts)
        e, c, h = self.num_experts, self.num_classes, self.expert_hidden
        if h:
            # First layer of every expert as one Linear(F, E*H); second as batched [E, H, C] weights.
            self.expert_in = nn.Linear(width, e * h)
            self.expert_w = nn.Parameter(torch.empty(e, h, c))
            self.expert_b = nn.Parameter(torch.empty(e, c))
            bound = 1.0 / math.sqrt(h)  # nn.Linear's default init, per expert
            nn.init.uniform_(self.expert_w, -bound, bound)
            nn.init.uniform_(self.expert_b, -bound, bound)
        else:
            self.expert_in = nn.Linear(width, e * c)
        self.aux_head = nn.Linear(width, c) if heads == "two" else None

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Anneal the Gumbel temperature (a function of the epoch only, so resuming recomputes it)."""
        self.tau = annealed_temperature(epoch, num_epochs, self.tau_start, self.tau_end)

    def expert_logits(self, f: torch.Tensor) -> torch.Tensor:
        """Every expert's logits for features ``f [B, F]``: ``[B, E, C]``."""
        b, e = f.shape[0], self.num_experts
        if not self.expert_hidden:
            return self.expert_in(f).view(b, e, self.num_classes)
        hidden = torch.relu(self.expert_in(f)).view(b, e, self.expert_hidden)
        return torch.einsum("beh,ehc->bec", hidden, self.expert_w) + self.expert_b

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.dropout(self.features(x))
        gate_logits = self.gate(f) / self.gate_temperature
        experts = self.expert_logits(f)
        if self.training and self.router == "gumbel_st":
            weights = gumbel_softmax_st(gate_logits, tau=self.tau, hard=self.gumbel_hard)
        else:
            # float32 softmax (autocast would keep bf16 here): the weights of a decisive gate
            # are 1 - 1e-3-ish, which bf16 cannot tell from 1.
            weights = torch.softmax(gate_logits.float(), dim=-1)
        logits = torch.einsum("be,bec->bc", weights.to(experts.dtype), experts)
        out = {"logits": logits, "gate_logits": gate_logits}
        if self.aux_head is not None:
            out["aux_logits"] = self.aux_head(f)
        if not self.training:
            route = gate_logits.argmax(dim=-1)
            out["hard_logits"] = experts[torch.arange(len(route), device=route.device), route]
        return out

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, router={self.router}, gate_temperature={self.gate_temperature}, "
                f"tau={self.tau:.3g}" + (", gumbel_hard=False" if self.router == "gumbel_st" and not self.gumbel_hard else ""))


def _trunk(input_shape: tuple[int, ...], channels: tuple[int, ...]) -> tuple[nn.Module, int]:
    """Conv blocks + global average pooling for ``(C, H, W)``; an MLP for ``(D,)``. Returns (module, width)."""
    if not channels:
        raise SoftlossError("model.channels must list at least one width")
    if len(input_shape) == 3:
        blocks, c_in = [], input_shape[0]
        for c in channels:
            blocks.append(conv_block(c_in, c))
            c_in = c
        return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()), c_in
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for c in channels:
        layers += [nn.Linear(width, c), nn.ReLU(inplace=True)]
        width = c
    return nn.Sequential(*layers), width
