"""``mlc``: Meta Label Correction with a one-step look-ahead hypergradient (SPEC.md, "MLC")."""
from __future__ import annotations

import torch

from .base import Batch, StepContext
from .functional import call_at
from .losses import lower_loss, mixture_upper_loss


def mlc_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    """1. ``w' = w - eta grad_w g(w, a)``, differentiable in ``a``;
    2. Adam on ``a`` with ``grad_a F(w'(a)) = -eta (d grad_w g / d a)^T grad_w' F(w')``;
    3. SGD on ``w`` with ``grad_w g(w, a)`` taken before the meta update."""
    cfg, model, meta = ctx.config, ctx.model, ctx.meta
    names, w = zip(*model.named_parameters())
    a = list(meta.parameters())
    x_up, y_up, x_c, y_c = batch.gold_halves(cfg.mix)
    n_s = batch.x_silver.shape[0]
    x_low = batch.x_silver if x_c is None else torch.cat([batch.x_silver, x_c])

    logits, feature = model(x_low)
    meta_log_probs = meta(feature[:n_s].detach(), batch.y_silver)
    g = lower_loss(logits[:n_s], meta_log_probs, logits[n_s:] if x_c is not None else None, y_c)
    grad_w_g = torch.autograd.grad(g, w, create_graph=True)  # graph kept: differentiated in a below

    eta = ctx.lr
    w_look = [p.detach() - eta * gw for p, gw in zip(w, grad_w_g)]  # depends on a only
    logits_up, _ = call_at(model, names, w_look, x_up)
    upper = mixture_upper_loss(logits_up, None, y_up, 1.0)
    meta_grads = torch.autograd.grad(upper, a)

    for p, gw in zip(w, grad_w_g):
        p.grad = gw.detach()
    for p, ga in zip(a, meta_grads):
        p.grad = ga
    ctx.opt.step()
    ctx.meta_opt.step()
    return {"upper_loss": upper.detach(), "lower_loss": g.detach()}
