"""A ResNet-18-style network for images larger than CIFAR's (He et al., 2016): a 3x3 stem (stride 2
and a max-pool for sides above 64 and 128 px), four stages of two basic blocks with 64/128/256/512
channels and 1x1 projection shortcuts, global average pooling. Trained from scratch (no pretrained
weights). ``forward`` returns ``(logits, pooled 512-d feature)`` like ResNet-32."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BatchNorm2d, Conv2d
from .resnet import kaiming_init


class Block(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.project = None
        if stride != 1 or in_planes != planes:
            self.project = nn.Sequential(Conv2d(in_planes, planes, 1, stride, 0, bias=False), BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.project is None else self.project(x)))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 64):
        super().__init__()
        self.conv1 = Conv2d(in_channels, 64, 3, 2 if image_size > 64 else 1, 1, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.pool = image_size > 128
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Block(in_planes, planes, stride), Block(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)
        self.feature_dim = 512
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.pool:
            out = F.max_pool2d(out, 3, 2, 1)
        feature = self.layers(out).mean(dim=(2, 3))
        return self.fc(feature), feature
