"""A multi-layer perceptron on flattened inputs (fast baseline for tiny data such as digits)."""

from __future__ import annotations

import math

from torch import nn

from softloss_cli.models.heads import Classifier
from softloss_cli.models.registry import MODELS


@MODELS.register("mlp", "multi-layer perceptron on flattened inputs (ReLU, optional dropout)")
class MLP(Classifier):
    """Flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> head(s).

    Args:
        input_shape: per-sample shape from the dataset; flattened.
        num_classes: C.
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.
        heads: ``'one'`` or ``'two'`` (see ``Classifier``).
        head, head_link: the output layer and the CLM link (see ``heads.make_head``).
    """

    def __init__(self, input_shape, num_classes: int, hidden=(256, 256), dropout: float = 0.0, heads: str = "one",
                 head: str = "linear", head_link: str = "logit"):
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        super().__init__(nn.Sequential(*layers), width, num_classes, heads, head, head_link)
