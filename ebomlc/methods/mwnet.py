"""``mwnet``: Meta-Weight-Net (Shu et al., 2019) in the shared loop.

The weight net ``V(l; theta)`` (MLP 1 -> 100 -> 1, sigmoid) maps each silver loss (detached) to a
weight. One step: ``w'(theta) = w - eta grad_w mean_i V(l_i; theta) l_i(w)``; Adam on ``theta`` with
``grad_theta F(w'(theta))`` (``F`` the gold CE); then SGD on ``w`` with ``mean_i V(l_i; theta_new) l_i(w)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TrainConfig
from .base import Batch, StepContext
from .functional import call_at, call_live, meta_look_ahead


class WeightNet(nn.Module):
    """``V(l) = sigmoid(W2 relu(W1 l + b1) + b2)``, hidden width 100."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(losses[:, None])).squeeze(1)


def weight_net(feature_dim: int, num_classes: int, config: TrainConfig) -> nn.Module:
    return WeightNet()


def mwnet_gradients(ctx: StepContext, batch: Batch):
    """``(grad_theta F(w'(theta)), per-example silver losses l(w), F(w'))``."""
    model, vnet = ctx.model, ctx.meta
    (logits, _), names, w = call_live(model, batch.x_silver)
    losses = F.cross_entropy(logits, batch.y_silver, reduction="none")
    weighted = (vnet(losses.detach()) * losses).mean()
    _, w_look = meta_look_ahead(weighted, w, ctx.lr)  # differentiated below in theta only
    gold_logits, _ = call_at(model, names, w_look, batch.x_gold)
    upper = F.cross_entropy(gold_logits, batch.y_gold)
    meta_grads = torch.autograd.grad(upper, list(vnet.parameters()))
    return list(meta_grads), losses, upper.detach()


def mwnet_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    meta_grads, losses, upper = mwnet_gradients(ctx, batch)
    for p, g in zip(ctx.meta.parameters(), meta_grads):
        p.grad = g
    ctx.meta_opt.step()
    with torch.no_grad():
        v = ctx.meta(losses.detach())
    loss = (v * losses).mean()
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()
    return {"train_loss": losses.detach().mean(), "upper_loss": upper, "mean_weight": v.mean()}
