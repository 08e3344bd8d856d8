"""Classifier = feature extractor + an output head (DESIGN: model output contract).

``model.head`` picks the output layer every backbone ends with (``make_head``):

* ``linear`` (default): ``nn.Linear(F, C)``, logits for a softmax or sigmoid loss;
* ``coral``: one shared weight vector and C-1 biases, ``cum_logits = w.f + b_k``
  (``P(y > k) = sigmoid``); rank-consistent (Cao et al., arXiv:1901.07884);
* ``corn``: ``nn.Linear(F, C-1)`` conditional logits ``P(y > k | y > k-1)`` (arXiv:2111.08851);
* ``clm``: a cumulative link model, one projection ``g = w.f`` and ordered thresholds,
  ``P(y <= k) = F(theta_k - g)`` with ``model.head_link`` = logit | probit | cloglog.

The three ordinal heads return ``{'logits': log class probabilities [B, C], <native>: [B, C-1]}``
(``losses/ordinal_heads.py``): ``softmax(logits)`` is the head's class distribution, so every
metric and figure reads them like a softmax's logits; their losses (``loss=coral|corn|clm``)
read the native outputs. ``config/compat.py:check_head`` refuses a head that does not fit the
loss or the task.
"""

from __future__ import annotations

import torch
from torch import nn

from softloss_cli.errors import SoftlossError
from softloss_cli.losses.ordinal_heads import (
    CLM_LINKS,
    clm_log_probs,
    coral_log_probs,
    corn_log_probs,
    ordered_thresholds,
)

HEADS = ("one", "two")
OUTPUT_HEADS = ("linear", "coral", "corn", "clm")


class CoralHead(nn.Module):
    """``cum_logits = f @ w + b`` ``[B, C-1]``: one weight vector shared by the C-1 binary
    tasks, one bias each (coral_pytorch's ``CoralLayer``, biases pre-initialised to
    ``(C-1-k)/(C-1)``, descending, as its ``preinit_bias=True``)."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Linear(feature_dim, 1, bias=False)
        self.bias = nn.Parameter(torch.arange(num_classes - 1, 0, -1, dtype=torch.float32) / (num_classes - 1))

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.weight(f) + self.bias
        return {"logits": coral_log_probs(s), "cum_logits": s}


class CornHead(nn.Module):
    """``cond_logits = Linear(F, C-1)``: independent weights per conditional task (CORN)."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes - 1)

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.linear(f)
        return {"logits": corn_log_probs(c), "cond_logits": c}


class ClmHead(nn.Module):
    """Cumulative link model: ``g = f @ w`` (no bias: the thresholds carry the offset),
    ``cum_logits = theta_k - g`` ``[B, C-1]`` with ``theta`` ordered (``ordered_thresholds``),
    initialised evenly spaced one unit apart around 0."""

    def __init__(self, feature_dim: int, num_classes: int, link: str = "logit", min_gap: float = 0.0):
        super().__init__()
        if link not in CLM_LINKS:
            raise SoftlossError(f"model.head_link must be one of {', '.join(CLM_LINKS)}, got {link!r}")
        self.link, self.min_gap = link, float(min_gap)
        self.projection = nn.Linear(feature_dim, 1, bias=False)
        self.first = nn.Parameter(torch.tensor([-(num_classes - 2) / 2.0]))
        # softplus(0.5413) = 1: unit gaps at initialisation.
        self.raw_gaps = nn.Parameter(torch.full((num_classes - 2,), 0.5413))

    def thresholds(self) -> torch.Tensor:
        """The ordered thresholds ``theta`` ``[C-1]``."""
        return ordered_thresholds(self.first, self.raw_gaps, self.min_gap)

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.thresholds() - self.projection(f)
        return {"logits": clm_log_probs(a, self.link), "cum_logits": a}

    def extra_repr(self) -> str:
        return f"link={self.link}"


def make_head(feature_dim: int, num_classes: int, head: str = "linear", head_link: str = "logit") -> nn.Module:
    """The output layer named by ``model.head`` (see the module docstring)."""
    if head not in OUTPUT_HEADS:
        raise SoftlossError(f"model.head must be one of {', '.join(OUTPUT_HEADS)}, got {head!r}")
    if head == "linear":
        return nn.Linear(feature_dim, num_classes)
    if num_classes < 2:
        raise SoftlossError(f"model.head={head} needs at least 2 classes, got {num_classes}")
    if head == "coral":
        return CoralHead(feature_dim, num_classes)
    if head == "corn":
        return CornHead(feature_dim, num_classes)
    return ClmHead(feature_dim, num_classes, head_link)


class Classifier(nn.Module):
    """Features ``[B, F]`` -> the output head (``make_head``); with ``heads='two'`` also a
    linear ``aux_logits [B, C]``.

    The second head is a separate linear layer on the same features (the multi-label
    head of the two-head Average-K loss). With one linear head ``forward`` returns the logits
    tensor; otherwise a dict with ``logits`` and the other outputs (``aux_logits``,
    ``cum_logits``, ``cond_logits``).
    """

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, heads: str = "one",
                 head: str = "linear", head_link: str = "logit"):
        super().__init__()
        if heads not in HEADS:
            raise SoftlossError(f"model.heads must be one of {', '.join(HEADS)}, got {heads!r}")
        self.features = features
        self.head = make_head(feature_dim, num_classes, head, head_link)
        self.aux_head = nn.Linear(feature_dim, num_classes) if heads == "two" else None
        self.heads = heads

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        out = self.head(f)
        if self.aux_head is None:
            return out
        out = dict(out) if isinstance(out, dict) else {"logits": out}
        out["aux_logits"] = self.aux_head(f)
        return out
