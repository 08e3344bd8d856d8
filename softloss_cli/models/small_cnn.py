"""A small convolutional net: fast enough on two CPU cores, strong enough for the synthetic sets."""

from __future__ import annotations

from torch import nn

from softloss_cli.models.heads import Classifier
from softloss_cli.models.registry import MODELS


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU -> 2x2 max-pool (halves the resolution)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@MODELS.register("small_cnn", "a few conv-BN-ReLU-pool blocks + global average pool (fast on CPU)")
class SmallCNN(Classifier):
    """Conv blocks (``channels``), each halving the resolution, then global average pooling.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: number of outputs.
        channels: output channels of each block; resolution must stay >= 1.
        dropout: dropout before the head(s).
        heads: ``'one'`` or ``'two'``.
        head, head_link: the output layer (``linear`` | ``coral`` | ``corn`` | ``clm``) and the CLM link (see ``heads.make_head``).
    """

    def __init__(self, input_shape, num_classes: int, channels=(32, 64, 128), dropout: float = 0.0, heads: str = "one",
                 head: str = "linear", head_link: str = "logit"):
        c_in = input_shape[0]
        blocks = []
        for c in channels:
            blocks.append(conv_block(c_in, c))
            c_in = c
        features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        super().__init__(features, c_in, num_classes, heads, head, head_link)
