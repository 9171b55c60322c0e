"""The barrier step as it was before the departures from the paper became separate parts, kept frozen
as the oracle of the bit-for-bit tests (test_departures.py): the restored-``w`` reading (``variant=
"restore_w"``, MLC-D's ``paper``) and ``variant="reference"`` must step exactly as this did, and the
revised ``paper`` step of EBOMLC exactly as this one with ``keep_inner_step`` (the former part
``lookahead_step``: the SGD step from ``w_K``, the same lines as the reference branch). Not used by the
library."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ebomlc.methods.base import Batch, StepContext
from ebomlc.methods.functional import call_at
from ebomlc.methods.losses import lower_loss, mixture_upper_loss, reference_upper_loss
from ebomlc.methods.vectors import cosine, flat, flat_grads, unflat_to_grad


# ---------------------------------------------------------------- pure barrier algebra
def barrier_lambda(grad_w_F: torch.Tensor, grad_a_F: torch.Tensor, grad_w_q: torch.Tensor,
                   grad_a_q: torch.Tensor, delta: float, eps: float = 1e-8) -> torch.Tensor:
    """Alignment-aware barrier (EBOMLC Eq. 10-11): the multiplier of
    ``min ||d - grad F||^2  s.t.  <grad q, d> >= phi``, ``phi = delta ||grad q||^2 + <grad_a F, grad_a q>``:

    ``lambda = max(delta ||grad q||^2 - <grad_w F, grad_w q>, 0) / (||grad q||^2 + eps)``.
    """
    q_norm2 = grad_w_q.dot(grad_w_q) + grad_a_q.dot(grad_a_q)
    return (delta * q_norm2 - grad_w_F.dot(grad_w_q)).clamp_min(0.0) / (q_norm2 + eps)


def reference_update(grad_w_F: torch.Tensor, grad_a_F: torch.Tensor, grad_w_q: torch.Tensor,
                     grad_a_q: torch.Tensor, w: torch.Tensor, w_look: torch.Tensor, momentum_buf: torch.Tensor,
                     eta: float, mu: float, wd: float, delta: float, xi: float, replace_q: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The public EBOMLC code's direction (SPEC.md "Reference variant"), on flat vectors:

    ``Delta_F = -eta (mu buf + grad_w F + wd w)``,
    ``lambda = xi max(delta ||grad q||^2 - <grad_w q, Delta_F>, 0) / ||grad q||^2``,
    main grad ``lambda grad_w q + Delta_F`` (with ``grad_w q -> -eta (mu buf + grad_w q + wd w')``
    after lambda when ``replace_q``), meta grad ``grad_a F + lambda grad_a q``.
    Returns ``(main_grad, meta_grad, lambda)``.
    """
    delta_F = -eta * (mu * momentum_buf + grad_w_F + wd * w)
    q_norm2 = grad_w_q.dot(grad_w_q) + grad_a_q.dot(grad_a_q)
    lam = xi * (delta * q_norm2 - grad_w_q.dot(delta_F)).clamp_min(0.0) / q_norm2
    q_w = -eta * (mu * momentum_buf + grad_w_q + wd * w_look) if replace_q else grad_w_q
    return lam * q_w + delta_F, grad_a_F + lam * grad_a_q, lam


# ---------------------------------------------------------------- losses at given weights
def _lower_at(model: nn.Module, meta: nn.Module, names: Sequence[str], weights: Sequence[torch.Tensor] | None,
              x_low: torch.Tensor, y_silver: torch.Tensor, y_clean: torch.Tensor | None,
              update_bn: bool = False, main_grad: bool = True) -> torch.Tensor:
    """``g(w, a)`` at the live weights (``weights=None``) or at look-ahead weights. With
    ``main_grad=False`` the main model runs without a graph (only ``grad_a g`` is wanted)."""
    n_s = y_silver.shape[0]
    with torch.set_grad_enabled(main_grad and torch.is_grad_enabled()):
        logits, feature = model(x_low) if weights is None else call_at(model, names, weights, x_low, update_bn)
        if not main_grad:
            logits, feature = logits.detach(), feature.detach()
    meta_log_probs = meta(feature[:n_s].detach(), y_silver)
    return lower_loss(logits[:n_s], meta_log_probs, logits[n_s:] if y_clean is not None else None, y_clean)


def _momentum_buffer(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> torch.Tensor:
    bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in params]
    return flat_grads(bufs, params)


# ---------------------------------------------------------------- the step
def legacy_barrier_step(ctx: StepContext, batch: Batch, reference: bool = False,
                        keep_inner_step: bool = False) -> dict[str, torch.Tensor]:
    """One dynamic-barrier step (paper variant by default):

    1. ``w_{k+1} = w_k - eta grad_w g(w_k, a)`` for ``k < K`` without a graph (first gradient reused);
    2. ``q = g(w, a) - g(w_K, a)``, ``grad q = [grad_w q; grad_a q]`` (``grad_w q`` finite-difference
       ``fd`` or ``partial``);
    3. ``lambda`` from :func:`barrier_lambda`;
    4. ``d = grad F + xi lambda grad q`` into ``.grad``; SGD on ``w``, Adam on ``a``.
    """
    cfg, model, meta = ctx.config, ctx.model, ctx.meta
    names, w = zip(*model.named_parameters())
    w = list(w)
    a = list(meta.parameters())
    n_w = len(w)
    x_up, y_up, x_c, y_c = batch.gold_halves(cfg.mix)
    x_low = batch.x_silver if x_c is None else torch.cat([batch.x_silver, x_c])
    eta, K = ctx.lr, cfg.inner_steps

    # g and grad g at (w, a): live forward, updates BN running statistics.
    g = _lower_at(model, meta, names, None, x_low, batch.y_silver, y_c)
    grads = torch.autograd.grad(g, w + a)
    grad_w_g, grad_a_g = list(grads[:n_w]), grads[n_w:]

    # F and grad F at (w, a).
    logits_up, feature_up = model(x_up)
    meta_up = meta(feature_up.detach(), y_up) if cfg.rho < 1.0 else None
    upper_fn = reference_upper_loss if reference else mixture_upper_loss
    upper = upper_fn(logits_up, meta_up, y_up, cfg.rho)
    grads_F = torch.autograd.grad(upper, w + a, allow_unused=True)
    grad_w_F, grad_a_F = flat_grads(grads_F[:n_w], w), flat_grads(grads_F[n_w:], a)

    # Inner loop without a graph: w_K is a constant.
    w_k = [p.detach() for p in w]
    grad_k = grad_w_g
    if reference:
        mu, wd = cfg.momentum, cfg.weight_decay
        bufs = [ctx.opt.state.get(p, {}).get("momentum_buffer") for p in w]
    for k in range(K):
        if k > 0:
            w_k = [t.requires_grad_(True) for t in w_k]
            g_k = _lower_at(model, meta, names, w_k, x_low, batch.y_silver, y_c, update_bn=reference)
            grad_k = torch.autograd.grad(g_k, w_k)
            w_k = [t.detach() for t in w_k]
        if reference:  # the authors' inner step: SGD with momentum buffer and weight decay
            steps = [gk + wd * wt + (mu * b if b is not None else 0.0) for gk, wt, b in zip(grad_k, w_k, bufs)]
            bufs = steps
            w_k = torch._foreach_add(w_k, steps, alpha=-eta)
        else:
            w_k = torch._foreach_add(w_k, list(grad_k), alpha=-eta)

    # g and its gradient at (w_K, a).
    if cfg.grad_q_w == "fd":
        w_K = [t.requires_grad_(True) for t in w_k]
        g_K = _lower_at(model, meta, names, w_K, x_low, batch.y_silver, y_c, update_bn=reference)
        grads_K = torch.autograd.grad(g_K, w_K + a)
        grad_w_q = flat(grad_w_g) - flat(grads_K[:n_w])
        grad_a_gK = grads_K[n_w:]
    else:  # partial: w_K held fixed, grad_w q = grad_w g(w, a); no main-model backward at w_K
        g_K = _lower_at(model, meta, names, w_k, x_low, batch.y_silver, y_c, update_bn=reference, main_grad=False)
        grad_a_gK = torch.autograd.grad(g_K, a)
        grad_w_q = flat(grad_w_g)
    grad_a_q = flat(grad_a_g) - flat(grad_a_gK)
    value_gap = (g - g_K).detach()

    if reference:
        w_flat, w_look_flat = flat([p.detach() for p in w]), flat(w_k)
        d_w, d_a, lam = reference_update(
            grad_w_F, grad_a_F, grad_w_q, grad_a_q, w_flat, w_look_flat, _momentum_buffer(ctx.opt, w),
            eta, cfg.momentum, cfg.weight_decay, cfg.delta, cfg.xi, replace_q=cfg.dataset != "cifar10")
        with torch.no_grad():  # the authors' code steps from the look-ahead weights
            for p, t in zip(w, w_k):
                p.copy_(t)
    else:
        lam = barrier_lambda(grad_w_F, grad_a_F, grad_w_q, grad_a_q, cfg.delta, cfg.eps)
        d_w = grad_w_F + cfg.xi * lam * grad_w_q
        d_a = grad_a_F + cfg.xi * lam * grad_a_q
        if keep_inner_step:  # the former part lookahead_step
            with torch.no_grad():
                for p, t in zip(w, w_k):
                    p.copy_(t)

    unflat_to_grad(d_w, w)
    unflat_to_grad(d_a, a)
    ctx.opt.step()
    ctx.meta_opt.step()
    q_norm = torch.sqrt(grad_w_q.dot(grad_w_q) + grad_a_q.dot(grad_a_q))
    return {
        "upper_loss": upper.detach(), "lower_loss": g.detach(), "value_gap": value_gap, "lambda": lam.detach(),
        "grad_w_F_norm": grad_w_F.norm(), "grad_a_F_norm": grad_a_F.norm(), "grad_q_norm": q_norm,
        "grad_w_q_norm": grad_w_q.norm(), "grad_a_q_norm": grad_a_q.norm(),
        "cos_F_q": cosine(grad_w_F, grad_w_q),
    }
