"""Classifier = feature extractor + one or two linear heads (DESIGN: model output contract)."""

from __future__ import annotations

import torch
from torch import nn

from softloss_cli.errors import SoftlossError

HEADS = ("one", "two")


class Classifier(nn.Module):
    """Features ``[B, F]`` -> logits ``[B, C]``; with ``heads='two'`` also ``aux_logits [B, C]``.

    The second head is a separate linear layer on the same features (the multi-label
    head of the two-head Average-K loss). With one head ``forward`` returns the logits
    tensor; with two it returns ``{'logits': ..., 'aux_logits': ...}``.
    """

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, heads: str = "one"):
        super().__init__()
        if heads not in HEADS:
            raise SoftlossError(f"model.heads must be one of {', '.join(HEADS)}, got {heads!r}")
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)
        self.aux_head = nn.Linear(feature_dim, num_classes) if heads == "two" else None
        self.heads = heads

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        logits = self.head(f)
        if self.aux_head is None:
            return logits
        return {"logits": logits, "aux_logits": self.aux_head(f)}
