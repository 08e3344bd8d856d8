"""Backbones with one or two linear heads. Each class takes ``(input_shape, num_classes, ...)``."""

from softloss_cli.models.heads import Classifier
from softloss_cli.models.mlp import MLP
from softloss_cli.models.registry import MODELS
from softloss_cli.models.resnet import ResNet18, ResNet50
from softloss_cli.models.small_cnn import SmallCNN
from softloss_cli.registry import import_families

__all__ = ["MODELS", "Classifier", "MLP", "SmallCNN", "ResNet18", "ResNet50"]

import_families("softloss_cli.models", ("routed",), globals())
