"""``mlc``: Meta Label Correction with a one-step look-ahead hypergradient (SPEC.md, "MLC")."""
from __future__ import annotations

import torch

from .base import Batch, StepContext
from .functional import call_at, call_live, meta_look_ahead
from .losses import lower_loss, mixture_upper_loss


def mlc_gradients(ctx: StepContext, batch: Batch):
    """``(grad_w g(w, a), grad_a F(w_K(a)), F(w_K), g(w, a))`` with the look-ahead
    ``w_{k+1} = w_k - eta grad_w g(w_k, a)``, ``w_0 = w``, K = ``inner_steps`` (1 by default).

    For K = 1, ``grad_a F(w'(a)) = -eta (d grad_w g / d a)^T grad_w' F(w')``: the graph of
    ``grad_w g`` is kept and differentiated in the meta parameters only; ``w'`` carries no graph
    back into ``w``. K > 1 unrolls the look-ahead (second order through every ``w_k``).
    """
    cfg, model, meta = ctx.config, ctx.model, ctx.meta
    a = list(meta.parameters())
    x_up, y_up, x_c, y_c = batch.gold_halves(cfg.mix)
    n_s = batch.x_silver.shape[0]
    x_low = batch.x_silver if x_c is None else torch.cat([batch.x_silver, x_c])

    (logits, feature), names, w = call_live(model, x_low)
    meta_log_probs = meta(feature[:n_s].detach(), batch.y_silver)
    g = lower_loss(logits[:n_s], meta_log_probs, logits[n_s:] if x_c is not None else None, y_c)
    eta = ctx.lr
    grad_w_g, w_look = meta_look_ahead(g, w, eta)  # w_look depends on a only
    for _ in range(1, cfg.inner_steps):
        logits_k, feature_k = call_at(model, names, w_look, x_low)
        g_k = lower_loss(logits_k[:n_s], meta(feature_k[:n_s].detach(), batch.y_silver),
                         logits_k[n_s:] if x_c is not None else None, y_c)
        grad_k = torch.autograd.grad(g_k, w_look, create_graph=True)
        w_look = [wk - eta * gk for wk, gk in zip(w_look, grad_k)]
    logits_up, _ = call_at(model, names, w_look, x_up)
    upper = mixture_upper_loss(logits_up, None, y_up, 1.0)
    meta_grads = torch.autograd.grad(upper, a)
    return [gw.detach() for gw in grad_w_g], list(meta_grads), upper.detach(), g.detach()


def mlc_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    """Adam on ``a`` with the hypergradient; SGD on ``w`` with ``grad_w g(w, a)`` taken before
    the meta update."""
    grad_w_g, meta_grads, upper, g = mlc_gradients(ctx, batch)
    for p, gw in zip(ctx.model.parameters(), grad_w_g):
        p.grad = gw
    for p, ga in zip(ctx.meta.parameters(), meta_grads):
        p.grad = ga
    ctx.opt.step()
    ctx.meta_opt.step()
    return {"upper_loss": upper, "lower_loss": g}
