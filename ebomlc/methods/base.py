"""What every method's step function receives: the batch and the live training objects."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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
    index: torch.Tensor | None = None  # the silver rows' indices into the training set (per-sample state)
    second_view: Callable[[], torch.Tensor] | None = None  # a fresh augmentation of the silver images

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
    state: dict[str, Any] = field(default_factory=dict)  # method state saved in checkpoints (GLC's C)
    peer: nn.Module | None = None  # the second network of two-network methods (its own SGD and schedule)
    peer_opt: torch.optim.Optimizer | None = None
    epoch: int = 0  # epochs completed before the current one
    steps_per_epoch: int = 1
    step_in_epoch: int = 0

    @property
    def lr(self) -> float:
        """``eta_t``: the main optimizer's current learning rate."""
        return self.opt.param_groups[0]["lr"]


StepFn = Callable[[StepContext, Batch], dict[str, torch.Tensor]]
MetaFactory = Callable[[int, int, TrainConfig], nn.Module]


def label_corrector(feature_dim: int, num_classes: int, config: TrainConfig) -> nn.Module:
    """The meta label-correction model of SPEC.md (MLC, MLC-D, EBOMLC)."""
    from ..models import MetaNet

    return MetaNet(feature_dim, num_classes, config.cls_dim, reference="reference_meta" in config.parts)


@dataclass(frozen=True)
class Method:
    """A training method: its step function and what data and models it needs.

    ``build_meta`` makes the meta model (trained by Adam with ``meta_lr``), or is None.
    ``on_epoch_start(trainer)`` runs before each epoch (GLC switches phases there; DivideMix fits its GMM
    split on a pass over the training set, :meth:`Trainer.per_sample_losses`).
    ``two_networks``: the loop builds a second main model (``ctx.peer``, its own seed, SGD and schedule),
    checkpoints it and evaluates ``ensemble`` (mean logits of both) or the first network alone.
    """

    name: str
    step: StepFn
    build_meta: MetaFactory | None = None
    corrects_labels: bool = False  # the meta model maps (feature, noisy label) to a corrected label
    union_batches: bool = False  # True: batches of silver+gold as one training set (``ce``)
    gold_only: bool = False  # True: batches from the gold set alone, as many steps per epoch as a silver epoch
    on_epoch_start: Callable[[Any], None] | None = None
    two_networks: bool = False
    ensemble: bool = False  # evaluate the two networks' mean logits (DivideMix's test)
    description: str = ""
