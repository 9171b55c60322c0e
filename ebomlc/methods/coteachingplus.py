"""``coteachingplus``: Co-teaching+ (Yu et al., ICML 2019) in the shared loop, two networks.

Each step both networks see the same batch. Before ``init_epochs`` (plain Co-teaching) the candidates
are the whole batch; afterwards only the samples whose predicted classes disagree,
``D = {i : argmax f_1(x_i) != argmax f_2(x_i)}``. Each network ranks the candidates by its own CE loss
and keeps the ``floor((1 - tau(e)) |D|)`` smallest; network 1 steps on the CE of network 2's kept
samples and network 2 on network 1's (normalised as below). The forget rate
``tau(e) = tau * min(e / (E_k - 1), 1)`` ramps linearly over the first ``E_k`` epochs to ``tau`` (default: the
run's noise level).

The loss of network 1 is ``(1/|B|) sum_{i in S_2} CE(f_1(x_i), y~_i)`` over the batch ``B`` (``coteach_norm``
``batch``, the default): each selected sample gets the gradient weight it has under CE, as a 0/1 sample
weight. ``selected`` divides by ``|S_2|`` instead (the mean over the selection). The published code trains with
Adam, whose step does not depend on that scale; under this toolkit's SGD the mean over a disagreement set of 2-5%
of the batch multiplies every selected sample's step by 20-50 (on digits it dropped a network from 85% to 9% test
accuracy in the first disagreement epoch; docs/methods.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Batch, StepContext
from .schedules import run_noise_level, scaled_epochs

#: The published CIFAR schedule: (init epochs, of total) per dataset, and the ramp length E_k of 200 epochs.
INIT_EPOCHS = {"cifar100": (5, 200)}
DEFAULT_INIT_EPOCHS = (20, 200)
GRADUAL_EPOCHS = (10, 200)


def forget_rate_at(epoch: int, final_rate: float, gradual_epochs: int) -> float:
    """``tau(e)``: ``linspace(0, tau, E_k)[e]`` for ``e < E_k``, then ``tau``."""
    if epoch >= gradual_epochs:
        return final_rate
    return 0.0 if gradual_epochs == 1 else final_rate * epoch / (gradual_epochs - 1)


def init_epochs(config) -> int:
    published, total = INIT_EPOCHS.get(config.dataset, DEFAULT_INIT_EPOCHS)
    return scaled_epochs(config.coteach_init_epochs, published, total, config.epochs)


def gradual_epochs(config) -> int:
    return scaled_epochs(config.coteach_gradual_epochs, *GRADUAL_EPOCHS, config.epochs, minimum=1)


def small_loss(losses: torch.Tensor, candidates: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """The ``floor((1 - forget_rate) n)`` candidates of smallest loss (all of them if that is 0), in rank order."""
    n = candidates.numel()
    keep = int((1.0 - forget_rate) * n) or n
    order = torch.sort(losses[candidates], stable=True).indices[:keep]
    return candidates[order]


def coteaching_plus_selection(logits_1: torch.Tensor, logits_2: torch.Tensor, labels: torch.Tensor,
                              forget_rate: float, disagreement: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(samples network 1 updates on, samples network 2 updates on)``: each the peer's small-loss
    samples among the candidates (the disagreements, or the whole batch before ``init_epochs``)."""
    if disagreement:
        candidates = (logits_1.argmax(1) != logits_2.argmax(1)).nonzero().squeeze(1)
    else:
        candidates = torch.arange(labels.numel(), device=labels.device)
    if candidates.numel() == 0:
        return candidates, candidates
    with torch.no_grad():
        loss_1 = F.cross_entropy(logits_1, labels, reduction="none")
        loss_2 = F.cross_entropy(logits_2, labels, reduction="none")
    return small_loss(loss_2, candidates, forget_rate), small_loss(loss_1, candidates, forget_rate)


def selected_ce(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, norm: str) -> torch.Tensor:
    """``sum_{i in index} CE(logits_i, labels_i) / n`` with ``n = |batch|`` (``norm="batch"``) or ``|index|``
    (``"selected"``); an empty selection contributes zero (weight decay and momentum still step)."""
    if index.numel() == 0:
        return logits.sum() * 0.0
    total = F.cross_entropy(logits[index], labels[index], reduction="sum")
    return total / (labels.numel() if norm == "batch" else index.numel())


def coteachingplus_on_epoch_start(trainer) -> None:
    """The epoch's forget rate ``tau(e)`` and whether candidates are the disagreements, into the method state."""
    cfg, state = trainer.config, trainer.ctx.state
    final = cfg.forget_rate if cfg.forget_rate is not None else run_noise_level(cfg, trainer.data)
    state["forget_rate"] = forget_rate_at(trainer.epoch, final, gradual_epochs(cfg))
    state["disagreement"] = trainer.epoch >= init_epochs(cfg)


def coteachingplus_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    cfg = ctx.config
    default_rate = cfg.forget_rate if cfg.forget_rate is not None else cfg.corruption_level
    rate = ctx.state.get("forget_rate", forget_rate_at(ctx.epoch, default_rate, gradual_epochs(cfg)))
    disagreement = ctx.state.get("disagreement", ctx.epoch >= init_epochs(cfg))
    logits_1, _ = ctx.model(batch.x_silver)
    logits_2, _ = ctx.peer(batch.x_silver)
    for_1, for_2 = coteaching_plus_selection(logits_1.detach(), logits_2.detach(), batch.y_silver, rate,
                                             disagreement)
    loss_1 = selected_ce(logits_1, batch.y_silver, for_1, cfg.coteach_norm)
    loss_2 = selected_ce(logits_2, batch.y_silver, for_2, cfg.coteach_norm)
    ctx.opt.zero_grad(set_to_none=True)
    ctx.peer_opt.zero_grad(set_to_none=True)
    (loss_1 + loss_2).backward()  # the two losses share no parameters
    ctx.opt.step()
    ctx.peer_opt.step()
    n = batch.y_silver.numel()
    return {"train_loss": loss_1.detach(), "peer_loss": loss_2.detach(),
            "updated_fraction": torch.tensor(for_1.numel() / n, device=logits_1.device)}
