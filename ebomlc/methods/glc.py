"""``glc``: Gold Loss Correction (Hendrycks et al., 2018) in the shared loop, in two phases.

Phase 1 (the first ``glc_phase1_epochs``, default half the epochs): CE on silver alone.
Then ``C_hat[i] = mean softmax(f(x))`` over gold images of true class ``i`` (the model's estimate of
``p(noisy label | true class i)``), the main model is re-initialised with a fresh optimizer and an
LR schedule scaled to the remaining epochs, and phase 2 trains on the forward-corrected silver
loss ``-log((softmax(f(x_s)) C_hat)[y~])`` plus plain CE on gold.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..data.augment import normalize
from .base import Batch, StepContext


@torch.no_grad()
def estimate_corruption(probs_fn: Callable[[torch.Tensor], torch.Tensor], x_gold: torch.Tensor,
                        y_gold: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C_hat[i, j] = mean_{x in gold, y = i} p(j | x)`` (rows of classes absent from gold: identity)."""
    probs = probs_fn(x_gold)
    c = torch.eye(num_classes, device=probs.device, dtype=probs.dtype)
    for i in range(num_classes):
        mask = y_gold == i
        if bool(mask.any()):
            c[i] = probs[mask].mean(0)
    return c


def forward_corrected_loss(logits: torch.Tensor, noisy: torch.Tensor, c_hat: torch.Tensor) -> torch.Tensor:
    """``mean -log((softmax(logits) C_hat)[y~])``."""
    probs = logits.softmax(1) @ c_hat
    return -torch.log(probs.gather(1, noisy[:, None]).squeeze(1).clamp_min(1e-12)).mean()


def phase1_epochs(config) -> int:
    return config.glc_phase1_epochs if config.glc_phase1_epochs is not None else max(1, config.epochs // 2)


def glc_on_epoch_start(trainer) -> None:
    """At the phase boundary: estimate ``C_hat`` on gold, re-initialise model, optimizer, schedule."""
    ctx, cfg = trainer.ctx, trainer.config
    if "c_hat" in ctx.state or trainer.epoch != phase1_epochs(cfg):
        return
    data, model = trainer.data, trainer.model
    model.eval()

    def probs(x):
        return torch.cat([model(normalize(x[i:i + 1000], data.mean, data.std))[0].softmax(1)
                          for i in range(0, x.shape[0], 1000)])

    ctx.state["c_hat"] = estimate_corruption(probs, data.x_gold, data.y_gold, data.num_classes)
    model.train()
    trainer.reset_main_model(remaining_epochs=cfg.epochs - trainer.epoch, seed_offset=1)


def glc_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    c_hat = ctx.state.get("c_hat")
    if c_hat is None:  # phase 1: silver alone, plain CE
        logits, _ = ctx.model(batch.x_silver)
        loss = F.cross_entropy(logits, batch.y_silver)
    else:  # phase 2: forward correction on silver, CE on gold
        n_s = batch.x_silver.shape[0]
        logits, _ = ctx.model(torch.cat([batch.x_silver, batch.x_gold]))
        n_g = logits.shape[0] - n_s
        loss = (n_s * forward_corrected_loss(logits[:n_s], batch.y_silver, c_hat)
                + n_g * F.cross_entropy(logits[n_s:], batch.y_gold)) / (n_s + n_g)
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()
    return {"train_loss": loss.detach()}
