"""The meta (label-correction) model ``m_a(h, y~)`` of SPEC.md.

``concat(h, Embedding(K, cls_dim)(y~)) -> Linear(h+cls, 128) -> tanh -> Linear(128, 128) -> tanh
-> Linear(128, K)``; ``forward`` returns log-probabilities over the K classes. The caller passes
the feature already detached. ``reference=True`` builds the authors' code's variant (Dropout(0.3)
after the first tanh, BatchNorm1d(128) after the second, PyTorch's default embedding init).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class MetaNet(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, cls_dim: int = 128, hidden: int = 128,
                 reference: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, cls_dim)
        layers: list[nn.Module] = [nn.Linear(feature_dim + cls_dim, hidden), nn.Tanh()]
        if reference:
            layers.append(nn.Dropout(0.3))
        layers += [nn.Linear(hidden, hidden), nn.Tanh()]
        if reference:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*layers)
        if not reference:
            nn.init.xavier_uniform_(self.embedding.weight)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feature: torch.Tensor, noisy_label: torch.Tensor) -> torch.Tensor:
        """``log m_a(h, y~)``: log-probabilities ``[B, K]``."""
        z = torch.cat([feature, self.embedding(noisy_label)], dim=1)
        return torch.log_softmax(self.net(z), dim=1)
