"""What every method's step function receives: the batch and the live training objects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..config import TrainConfig


@dataclass
class Batch:
    """One step's data, augmented and on the device. ``silver`` labels are the noisy ones.
    For ``ce`` the silver part is a batch of the union of silver and gold, and gold is None."""

    x_silver: torch.Tensor
    y_silver: torch.Tensor
    x_gold: torch.Tensor | None = None
    y_gold: torch.Tensor | None = None

    def gold_halves(self, mix: bool):
        """``(x_upper, y_upper, x_clean, y_clean)``: in mix mode the first gold half feeds the
        upper loss and the second half the lower loss; otherwise all gold is upper."""
        if not mix:
            return self.x_gold, self.y_gold, None, None
        half = self.x_gold.shape[0] // 2
        return self.x_gold[:half], self.y_gold[:half], self.x_gold[half:], self.y_gold[half:]


@dataclass
class StepContext:
    """The live models and optimizers a step updates in place."""

    model: nn.Module
    meta: nn.Module | None
    opt: torch.optim.Optimizer
    meta_opt: torch.optim.Optimizer | None
    config: TrainConfig

    @property
    def lr(self) -> float:
        """``eta_t``: the main optimizer's current learning rate."""
        return self.opt.param_groups[0]["lr"]


StepFn = Callable[[StepContext, Batch], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    """A training method: its step function and what data and models it needs."""

    name: str
    step: StepFn
    uses_meta: bool
    union_batches: bool = False  # True: batches of silver+gold as one training set (``ce``)
    description: str = ""
