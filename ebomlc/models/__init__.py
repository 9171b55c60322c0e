"""Models: ResNet-32 (CIFAR), a small CNN (digits), a ResNet-18-style net (larger images) and the meta
label-correction model."""
from __future__ import annotations

import torch.nn as nn

from ..errors import ConfigError
from .layers import meta_gradient_only
from .meta import MetaNet
from .resnet import ResNetCifar, resnet32
from .resnet18 import ResNet18
from .small_cnn import SmallCNN

__all__ = ["MetaNet", "meta_gradient_only", "ResNetCifar", "ResNet18", "SmallCNN", "resnet32", "build_main_model",
           "model_for"]


def model_for(image_size: int) -> str:
    """The main model of ``--model auto``: small_cnn up to 16 px, resnet32 up to 48 px, else resnet18."""
    return "small_cnn" if image_size <= 16 else "resnet32" if image_size <= 48 else "resnet18"


def build_main_model(model: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The main model named ``model`` (``auto``: :func:`model_for` the image side)."""
    name = model_for(image_size) if model == "auto" else model
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels)
    if name == "resnet32":
        return resnet32(num_classes, in_channels)
    if name == "resnet18":
        return ResNet18(num_classes, in_channels, image_size)
    raise ConfigError(f"unknown model {model!r}; choose one of: auto, small_cnn, resnet32, resnet18")
