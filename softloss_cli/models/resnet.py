"""torchvision ResNets adapted to small images (3x3 stem, no max-pool below 64 px)."""

from __future__ import annotations

from torch import nn

from softloss_cli.errors import SoftlossError
from softloss_cli.models.heads import Classifier
from softloss_cli.models.registry import MODELS

_ARCHS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}


def _load_backbone(arch: str, pretrained: bool):
    import torchvision

    weights = None
    if pretrained:
        weights = getattr(torchvision.models, _ARCHS[arch]).DEFAULT
    try:
        return getattr(torchvision.models, arch)(weights=weights)
    except Exception as exc:  # no network, no cached file, corrupt download
        import os

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hub = os.path.join(os.environ.get("TORCH_HOME", "~/.cache/torch"), "hub", "checkpoints")
        file = weights.url.rsplit("/", 1)[-1] if weights is not None else "the weights file"
        raise SoftlossError(
            f"cannot load pretrained {arch} weights ({reason}); put {file} in {hub} "
            f"or pass model.pretrained=false"
        ) from exc


class _ResNet(Classifier):
    arch = "resnet18"

    def __init__(self, input_shape, num_classes: int, pretrained: bool = False, small_input: str | bool = "auto",
                 heads: str = "one",
                 head: str = "linear", head_link: str = "logit"):
        net = _load_backbone(self.arch, pretrained)
        in_ch, height = input_shape[0], input_shape[-1]
        small = height < 64 if small_input == "auto" else bool(small_input)
        if small:  # a 7x7/2 stem and a max-pool would leave 32x32 inputs at 1x1 before the last stage
            net.conv1 = nn.Conv2d(in_ch, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_ch != 3:
            net.conv1 = nn.Conv2d(in_ch, 64, 7, stride=2, padding=3, bias=False)
        feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        super().__init__(net, feature_dim, num_classes, heads, head, head_link)


@MODELS.register("resnet18", "torchvision ResNet-18 (3x3 stem for small images, optional pretrained)")
class ResNet18(_ResNet):
    """torchvision ResNet-18; ``small_input`` (auto: below 64 px) swaps the stem for a 3x3/1 conv.

    Args: input_shape, num_classes, pretrained (ImageNet weights; a clear error when they
    cannot be had), small_input (auto | true | false), heads (one | two), head and head_link
    (the output layer, see ``heads.make_head``).
    """

    arch = "resnet18"


@MODELS.register("resnet50", "torchvision ResNet-50 (for real-data runs such as Pl@ntNet-300K)")
class ResNet50(_ResNet):
    """torchvision ResNet-50; same options as ``ResNet18``."""

    arch = "resnet50"
