"""A small CNN for 8x8 ``digits``: three conv-BN-ReLU layers, global pooling, a linear head.
``forward`` returns ``(logits, pooled 64-d feature)`` like ResNet-32."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BatchNorm2d, Conv2d


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.conv1 = Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = Conv2d(width, 2 * width, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(2 * width)
        self.conv3 = Conv2d(2 * width, 64, 3, 1, 1, bias=False)
        self.bn3 = BatchNorm2d(64)
        self.fc = nn.Linear(64, num_classes)
        self.feature_dim = 64

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.max_pool2d(F.relu(self.bn2(self.conv2(out))), 2)
        out = F.relu(self.bn3(self.conv3(out)))
        feature = out.mean(dim=(2, 3))
        return self.fc(feature), feature
