"""Models: ResNet-32 (CIFAR), a small CNN (digits) and the meta label-correction model."""
from __future__ import annotations

import torch.nn as nn

from .layers import meta_gradient_only
from .meta import MetaNet
from .resnet import ResNetCifar, resnet32
from .small_cnn import SmallCNN

__all__ = ["MetaNet", "meta_gradient_only", "ResNetCifar", "SmallCNN", "resnet32", "build_main_model"]


def build_main_model(dataset: str, num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-32 for CIFAR, the small CNN for ``digits``."""
    if dataset == "digits":
        return SmallCNN(num_classes, in_channels)
    return resnet32(num_classes, in_channels)
