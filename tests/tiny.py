"""A tiny main model (with BatchNorm) and helpers for exact method tests in float64."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ebomlc import TrainConfig
from ebomlc.methods import Batch, StepContext
from ebomlc.models import MetaNet

D_IN, H, K = 6, 5, 3


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(D_IN, H)
        self.bn = nn.BatchNorm1d(H)
        self.lin2 = nn.Linear(H, K)

    def forward(self, x):
        h = torch.tanh(self.bn(self.lin1(x)))
        return self.lin2(h), h


def make_ctx(method: str, seed: int = 0, lr: float = 0.3, **overrides) -> StepContext:
    torch.manual_seed(seed)
    model = Tiny().double()
    cfg = TrainConfig(method=method, dataset="digits", main_lr=lr, meta_lr=1e-2, **overrides).resolved()
    meta = MetaNet(H, K, cls_dim=4, hidden=8, reference=cfg.variant == "reference").double()
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


def make_batch(seed: int = 1, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, D_IN, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g),
                 torch.randn(n, D_IN, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g))
