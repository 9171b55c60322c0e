"""``l2rw``: Learning to Reweight (Ren et al., 2018) in the shared loop.

Per-example silver weights ``u_i = max(-d F(w'(e)) / d e_i, 0)`` at ``e = 0``, with the one-step
look-ahead ``w'(e) = w - eta grad_w sum_i e_i l_i(w)`` and the gold loss ``F``; normalised to sum 1
(all zero if none is positive). The main model steps on ``sum_i u_i l_i(w)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Batch, StepContext
from .functional import call_at, call_live, meta_look_ahead


def l2rw_weights(ctx: StepContext, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, per-example silver losses l(w))``; the losses keep their graph for the main step."""
    model = ctx.model
    (logits, _), names, w = call_live(model, batch.x_silver)
    losses = F.cross_entropy(logits, batch.y_silver, reduction="none")
    eps = torch.zeros_like(losses, requires_grad=True)
    _, w_look = meta_look_ahead((eps * losses).sum(), w, ctx.lr)  # differentiated below in eps only
    gold_logits, _ = call_at(model, names, w_look, batch.x_gold)
    grad_eps, = torch.autograd.grad(F.cross_entropy(gold_logits, batch.y_gold), eps)
    u = (-grad_eps).clamp_min(0.0)
    total = u.sum()
    u = u / torch.where(total > 0, total, torch.ones_like(total))
    return u.detach(), losses


def l2rw_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    u, losses = l2rw_weights(ctx, batch)
    loss = (u * losses).sum()
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()
    return {"train_loss": losses.detach().mean(), "weighted_loss": loss.detach(),
            "weight_nonzero": (u > 0).float().mean()}
