"""``ce``: plain cross-entropy on silver (noisy labels) and gold as one training set."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Batch, StepContext


def ce_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    """One SGD step on ``mean CE(f_w(x), y)``."""
    logits, _ = ctx.model(batch.x_silver)
    loss = F.cross_entropy(logits, batch.y_silver)
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()
    return {"train_loss": loss.detach()}
