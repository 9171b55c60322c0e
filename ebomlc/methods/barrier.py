"""Dynamic-barrier MLC: one first-order step, two presets (SPEC.md "Dynamic-barrier MLC").

``mlcbome`` (MLC-D): K = 5, rho = 1, delta = 0.5, xi = 1.  ``ebomlc``: K = 1, rho = 0.2,
delta = 0.25, xi = 0.5. The step reads the set of named parts in force (``config.parts``, named in
``ebomlc.departures``); with none it follows SPEC.md for EBOMLC (MLC-D's preset adds ``restore_w``). The barrier algebra
is in pure functions on flat vectors (:func:`barrier_lambda`, :func:`barrier_direction`) so it can be
checked in isolation.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, StepContext
from .functional import call_at
from .losses import lower_loss, mixture_upper_loss, reference_upper_loss
from .vectors import cosine, flat, flat_grads, unflat_to_grad


# ---------------------------------------------------------------- pure barrier algebra
def barrier_lambda(grad_w_F: torch.Tensor, grad_a_F: torch.Tensor, grad_w_q: torch.Tensor,
                   grad_a_q: torch.Tensor, delta: float, eps: float = 1e-8) -> torch.Tensor:
    """Alignment-aware barrier (EBOMLC Eq. 10-11): the multiplier of
    ``min ||d - grad F||^2  s.t.  <grad q, d> >= phi``, ``phi = delta ||grad q||^2 + <grad_a F, grad_a q>``:

    ``lambda = max(delta ||grad q||^2 - <grad_w F, grad_w q>, 0) / (||grad q||^2 + eps)``.
    """
    q_norm2 = grad_w_q.dot(grad_w_q) + grad_a_q.dot(grad_a_q)
    return (delta * q_norm2 - grad_w_F.dot(grad_w_q)).clamp_min(0.0) / (q_norm2 + eps)


def sgd_step(grad: torch.Tensor, w: torch.Tensor, momentum_buf: torch.Tensor, eta: float, mu: float,
             wd: float) -> torch.Tensor:
    """The step SGD would take: ``-eta (mu buf + grad + wd w)`` (the authors' ``update_params``)."""
    return -eta * (mu * momentum_buf + grad + wd * w)


def barrier_direction(grad_w_F: torch.Tensor, grad_a_F: torch.Tensor, grad_w_q: torch.Tensor,
                      grad_a_q: torch.Tensor, parts: frozenset[str], *, eta: float, mu: float, wd: float,
                      delta: float, xi: float, eps: float, w: torch.Tensor | None = None,
                      w_look: torch.Tensor | None = None, momentum_buf: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 3-4 on flat vectors: ``d_w = F_w + c q_w``, ``d_a = grad_a F + c grad_a q``, ``(d_w, d_a, lambda)``.

    Paper (no parts): ``c = xi lambda`` with :func:`barrier_lambda`, ``F_w = grad_w F``, ``q_w = grad_w q``.
    ``step_lambda``: ``c = lambda = xi max(delta ||grad q||^2 - <grad_w q, Delta_F>, 0) / ||grad q||^2``
    with ``Delta_F = sgd_step(grad_w F, w)``; ``step_f_term``: ``F_w = Delta_F``;
    ``q_as_step``: ``q_w = sgd_step(grad_w q, w_look)`` (after lambda). ``w``, ``w_look`` and the
    momentum buffer are read only by these three parts.
    """
    delta_F = None
    if "step_lambda" in parts or "step_f_term" in parts:
        delta_F = sgd_step(grad_w_F, w, momentum_buf, eta, mu, wd)
    if "step_lambda" in parts:
        q_norm2 = grad_w_q.dot(grad_w_q) + grad_a_q.dot(grad_a_q)
        lam = xi * (delta * q_norm2 - grad_w_q.dot(delta_F)).clamp_min(0.0) / q_norm2
        coef = lam
    else:
        lam = barrier_lambda(grad_w_F, grad_a_F, grad_w_q, grad_a_q, delta, eps)
        coef = xi * lam
    q_w = sgd_step(grad_w_q, w_look, momentum_buf, eta, mu, wd) if "q_as_step" in parts else grad_w_q
    f_w = delta_F if "step_f_term" in parts else grad_w_F
    return f_w + coef * q_w, grad_a_F + coef * grad_a_q, lam


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


def _momentum_buffers(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """SGD's momentum buffer of each parameter (None before its first step)."""
    return [opt.state.get(p, {}).get("momentum_buffer") for p in params]


# ---------------------------------------------------------------- the step
def barrier_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    """One dynamic-barrier step (paper variant by default):

    1. ``w_{k+1} = w_k - eta grad_w g(w_k, a)`` for ``k < K`` without a graph (first gradient reused);
    2. ``q = g(w, a) - g(w_K, a)``, ``grad q = [grad_w q; grad_a q]`` (``grad_w q`` finite-difference
       ``fd`` or ``partial``);
    3. ``lambda`` from :func:`barrier_lambda`;
    4. ``d = grad F + xi lambda grad q`` into ``.grad``; SGD on ``w`` from ``w_K`` (from the restored
       ``w`` with the part ``restore_w``, MLC-D's preset), Adam on ``a``.

    Each part in ``config.parts`` changes only what it names (``ebomlc.departures.PARTS``).
    """
    cfg, model, meta = ctx.config, ctx.model, ctx.meta
    parts = cfg.parts
    look_bn = "lookahead_bn" in parts
    names, w = zip(*model.named_parameters())
    w = list(w)
    a = list(meta.parameters())
    n_w = len(w)
    x_up, y_up, x_c, y_c = batch.gold_halves(cfg.mix)
    x_low = batch.x_silver if x_c is None else torch.cat([batch.x_silver, x_c])
    eta, K = ctx.lr, cfg.inner_steps
    mu, wd = cfg.momentum, cfg.weight_decay

    # g and grad g at (w, a): live forward, updates BN running statistics.
    g = _lower_at(model, meta, names, None, x_low, batch.y_silver, y_c)
    grads = torch.autograd.grad(g, w + a)
    grad_w_g, grad_a_g = list(grads[:n_w]), grads[n_w:]

    # F and grad F at (w, a).
    logits_up, feature_up = model(x_up)
    meta_up = meta(feature_up.detach(), y_up) if cfg.rho < 1.0 else None
    upper_fn = reference_upper_loss if "logit_mix_upper" in parts else mixture_upper_loss
    upper = upper_fn(logits_up, meta_up, y_up, cfg.rho)
    grads_F = torch.autograd.grad(upper, w + a, allow_unused=True)
    grad_w_F, grad_a_F = flat_grads(grads_F[:n_w], w), flat_grads(grads_F[n_w:], a)

    # Inner loop without a graph: w_K is a constant.
    w_k = [p.detach() for p in w]
    grad_k = grad_w_g
    momentum_bufs = _momentum_buffers(ctx.opt, w)  # read before this step's optimizer update
    bufs = momentum_bufs
    for k in range(K):
        if k > 0:
            w_k = [t.requires_grad_(True) for t in w_k]
            g_k = _lower_at(model, meta, names, w_k, x_low, batch.y_silver, y_c, update_bn=look_bn)
            grad_k = torch.autograd.grad(g_k, w_k)
            w_k = [t.detach() for t in w_k]
        if "inner_momentum" in parts:  # the authors' inner step: SGD with momentum buffer and weight decay
            steps = [gk + wd * wt + (mu * b if b is not None else 0.0) for gk, wt, b in zip(grad_k, w_k, bufs)]
            bufs = steps
            w_k = torch._foreach_add(w_k, steps, alpha=-eta)
        else:
            w_k = torch._foreach_add(w_k, list(grad_k), alpha=-eta)

    # g and its gradient at (w_K, a).
    if cfg.grad_q_w == "fd":
        w_K = [t.requires_grad_(True) for t in w_k]
        g_K = _lower_at(model, meta, names, w_K, x_low, batch.y_silver, y_c, update_bn=look_bn)
        grads_K = torch.autograd.grad(g_K, w_K + a)
        grad_w_q = flat(grad_w_g) - flat(grads_K[:n_w])
        grad_a_gK = grads_K[n_w:]
    else:  # partial: w_K held fixed, grad_w q = grad_w g(w, a); no main-model backward at w_K
        g_K = _lower_at(model, meta, names, w_k, x_low, batch.y_silver, y_c, update_bn=look_bn, main_grad=False)
        grad_a_gK = torch.autograd.grad(g_K, a)
        grad_w_q = flat(grad_w_g)
    grad_a_q = flat(grad_a_g) - flat(grad_a_gK)
    value_gap = (g - g_K).detach()

    uses_step = {"step_lambda", "step_f_term", "q_as_step"} & parts
    d_w, d_a, lam = barrier_direction(
        grad_w_F, grad_a_F, grad_w_q, grad_a_q, parts,
        w=flat([p.detach() for p in w]) if uses_step else None, w_look=flat(w_k) if uses_step else None,
        momentum_buf=flat_grads(momentum_bufs, w) if uses_step else None,
        eta=eta, mu=mu, wd=wd, delta=cfg.delta, xi=cfg.xi, eps=cfg.eps)
    if "restore_w" not in parts:  # SPEC.md step 4: the main model keeps its inner step (EBOMLC; MLC-D restores w)
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
