"""``pmwnet``: PMW-Net (Zhao et al., TNNLS 2023), a probabilistic Meta-Weight-Net, in the shared loop.

The weight net's parameters have a Gaussian variational posterior ``q(theta) = N(mu, diag sigma^2)``
(``sigma = exp(s)``) and the prior ``p(theta) = N(0, s_0^2 I)``. One step, with ``theta = mu + sigma * eps``,
``eps ~ N(0, I)`` from the run's seeded RNG: the MW-Net look-ahead
``w'(theta) = w - eta grad_w mean_i V(l_i; theta) l_i(w)``; Adam on ``(mu, s)`` with the gradient of
``F(w'(theta)) + beta KL(q || p) / |gold|`` (``F`` the gold CE; ``KL`` in closed form); then SGD on ``w``
with ``mean_i V(l_i; theta_new) l_i(w)`` at a fresh sample ``theta_new`` of the updated posterior.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..config import TrainConfig
from .base import Batch, StepContext
from .functional import call_at, call_live, meta_look_ahead
from .mwnet import WeightNet


class VariationalWeightNet(nn.Module):
    """``q(theta)``: a MW-Net weight net's parameters as means ``mu`` with log standard deviations ``s``."""

    def __init__(self, sigma_init: float, hidden: int = 100):
        super().__init__()
        self.mean = WeightNet(hidden)
        self.log_sigma = nn.ParameterList(
            [nn.Parameter(torch.full_like(p, math.log(sigma_init))) for p in self.mean.parameters()])

    def sample(self) -> dict[str, torch.Tensor]:
        """``theta = mu + exp(s) * eps`` per parameter, ``eps`` from the global (checkpointed) CPU torch RNG, so
        a seed draws the same ``eps`` on every device."""
        return {name: mu + s.exp() * torch.randn(mu.shape, dtype=mu.dtype).to(mu.device)
                for (name, mu), s in zip(self.mean.named_parameters(), self.log_sigma)}

    def weights(self, losses: torch.Tensor, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """``V(l; theta)``."""
        return functional_call(self.mean, theta, (losses,))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """``V(l; mu)``: the weights at the posterior mean."""
        return self.mean(losses)


def variational_weight_net(feature_dim: int, num_classes: int, config: TrainConfig) -> nn.Module:
    return VariationalWeightNet(config.pmwnet_sigma_init)


def gaussian_kl(mu: list[torch.Tensor], log_sigma: list[torch.Tensor], prior_std: float) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, s_0^2)) = sum [log(s_0 / sigma) + (sigma^2 + mu^2) / (2 s_0^2) - 1/2]``."""
    total = 0.0
    for m, s in zip(mu, log_sigma):
        total = total + (math.log(prior_std) - s + ((2 * s).exp() + m ** 2) / (2 * prior_std ** 2) - 0.5).sum()
    return total


def pmwnet_on_epoch_start(trainer) -> None:
    trainer.ctx.state["n_gold"] = int(len(trainer.data.y_gold))


def pmwnet_gradients(ctx: StepContext, batch: Batch):
    """``(gradients in (mu, s) of F(w'(theta)) + beta KL / |gold|, per-example losses l(w), F(w'))``."""
    model, qnet, cfg = ctx.model, ctx.meta, ctx.config
    theta = qnet.sample()
    (logits, _), names, w = call_live(model, batch.x_silver)
    losses = F.cross_entropy(logits, batch.y_silver, reduction="none")
    weighted = (qnet.weights(losses.detach(), theta) * losses).mean()
    _, w_look = meta_look_ahead(weighted, w, ctx.lr)  # differentiated below in (mu, s) only
    gold_logits, _ = call_at(model, names, w_look, batch.x_gold)
    upper = F.cross_entropy(gold_logits, batch.y_gold)
    meta_loss = upper
    if cfg.pmwnet_kl_weight > 0:
        n_gold = ctx.state.get("n_gold", batch.y_gold.numel())
        kl = gaussian_kl(list(qnet.mean.parameters()), list(qnet.log_sigma), cfg.pmwnet_prior_std)
        meta_loss = upper + cfg.pmwnet_kl_weight * kl / n_gold
    meta_grads = torch.autograd.grad(meta_loss, list(qnet.parameters()), allow_unused=True)
    return list(meta_grads), losses, upper.detach()


def pmwnet_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    meta_grads, losses, upper = pmwnet_gradients(ctx, batch)
    for p, g in zip(ctx.meta.parameters(), meta_grads):
        p.grad = g if g is not None else torch.zeros_like(p)
    ctx.meta_opt.step()
    with torch.no_grad():
        v = ctx.meta.weights(losses.detach(), ctx.meta.sample())
    loss = (v * losses).mean()
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()
    sigma = torch.cat([s.detach().exp().flatten() for s in ctx.meta.log_sigma])
    return {"train_loss": losses.detach().mean(), "upper_loss": upper, "mean_weight": v.mean(),
            "mean_sigma": sigma.mean()}
