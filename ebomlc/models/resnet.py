"""ResNet-32 for 32x32 images (He et al., 2016): 16/32/64 channels, 5 basic blocks per stage,
parameter-free option-A shortcuts. ``forward`` returns ``(logits, pooled 64-d feature)``."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BatchNorm2d, Conv2d


def kaiming_init(model: nn.Module) -> None:
    """He-normal weights for every convolution and linear layer of ``model``, in module order."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.pad = planes - in_planes if (stride != 1 or in_planes != planes) else 0
        self.stride = stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: subsample by the stride and zero-pad the new channels (no parameters)."""
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for CIFAR; n = 5 gives ResNet-32."""

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 5, in_channels: int = 3):
        super().__init__()
        self.conv1 = Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        self.feature_dim = 64
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        feature = out.mean(dim=(2, 3))
        return self.fc(feature), feature


def resnet32(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    return ResNetCifar(num_classes, 5, in_channels)
