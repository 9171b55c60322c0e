"""A tiny main model (with BatchNorm) and helpers for exact method tests in float64; quick digits options."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ebomlc import TrainConfig
from ebomlc.methods import Batch, StepContext
from ebomlc.models import MetaNet
from ebomlc.models.layers import BatchNorm2d, Conv2d

D_IN, H, K = 6, 5, 3
C_IN, SIZE = 2, 6  # TinyConv's input images
FAST = dict(dataset="digits", gold_fraction=0.05, device="cpu", bs=100)  # quick digits runs


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(D_IN, H)
        self.bn = nn.BatchNorm1d(H)
        self.lin2 = nn.Linear(H, K)

    def forward(self, x):
        h = torch.tanh(self.bn(self.lin1(x)))
        return self.lin2(h), h


class TinyConv(nn.Module):
    """The layers of the real models (conv-BN-ReLU, a stride-2 conv-BN, pooling, linear), tiny.
    ``plain`` builds it from ``nn.Conv2d`` / ``nn.BatchNorm2d`` (same parameter names)."""

    def __init__(self, plain: bool = False):
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if plain else (Conv2d, BatchNorm2d)
        self.conv1, self.bn1 = conv(C_IN, 4, 3, 1, 1, bias=False), bn(4)
        self.conv2, self.bn2 = conv(4, H, 3, 2, 1, bias=False), bn(H)
        self.lin = nn.Linear(H, K)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = torch.tanh(self.bn2(self.conv2(h))).mean((2, 3))
        return self.lin(h), h


def plain_twin(model: nn.Module) -> nn.Module:
    """``model`` rebuilt from PyTorch's own layers, with the same parameters and buffers."""
    if not isinstance(model, TinyConv):
        return copy.deepcopy(model)
    twin = TinyConv(plain=True).to(next(model.parameters()).dtype)
    twin.load_state_dict(model.state_dict())
    return twin


def make_ctx(method: str, seed: int = 0, lr: float = 0.3, arch: str = "mlp", **overrides) -> StepContext:
    torch.manual_seed(seed)
    model = (Tiny() if arch == "mlp" else TinyConv()).double()
    # the paper's equations (SPEC.md; the presets) unless a test names another variant
    cfg = TrainConfig(**{"method": method, "dataset": "digits", "main_lr": lr, "meta_lr": 1e-2, "variant": "paper",
                         **overrides}).resolved()
    meta = MetaNet(H, K, cls_dim=4, hidden=8, reference="reference_meta" in cfg.parts).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    meta_opt = torch.optim.Adam(meta.parameters(), lr=cfg.meta_lr, amsgrad=True)
    return StepContext(model, meta, opt, meta_opt, cfg)


def clone_ctx(ctx: StepContext, **overrides) -> StepContext:
    import dataclasses

    model, meta = copy.deepcopy(ctx.model), copy.deepcopy(ctx.meta)
    cfg = dataclasses.replace(ctx.config, **overrides)
    opt = torch.optim.SGD(model.parameters(), **{k: v for k, v in ctx.opt.defaults.items()
                                                if k in ("lr", "momentum", "weight_decay")})
    meta_opt = torch.optim.Adam(meta.parameters(), lr=cfg.meta_lr, amsgrad=True)
    return StepContext(model, meta, opt, meta_opt, cfg)


def make_batch(seed: int = 1, n: int = 8, arch: str = "mlp") -> Batch:
    g = torch.Generator().manual_seed(seed)
    shape = (n, D_IN) if arch == "mlp" else (n, C_IN, SIZE, SIZE)
    return Batch(torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g),
                 torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g))
