"""``dividemix``: DivideMix (Li et al., ICLR 2020) in the shared loop, two networks.

Warm-up (the first ``dividemix_warmup`` epochs): CE on both networks (plus the confidence penalty
``sum_k p_k log p_k`` for class-dependent noise). Then, at each epoch start, each network's per-sample
losses on the training set (min-max normalised) get a two-component GMM; ``w_i`` is the posterior of the
low-mean component. Each network trains on its peer's split: samples with ``w_i > p_threshold`` are
labelled, the others unlabelled. Per step, for the network being trained (``f``; peer ``g`` in eval mode)
on two augmentations ``x, x'`` of the batch:

* co-refinement (labelled): ``p = sharpen(w y + (1 - w) (f(x) + f(x')) / 2, T)`` (softmax outputs),
* co-guessing (unlabelled): ``q = sharpen((f(u) + f(u') + g(u) + g(u')) / 4, T)``,
  ``sharpen(p, T)_k = p_k^(1/T) / sum_j p_j^(1/T)``,
* MixUp of all ``[x, x', u, u']`` with a random permutation: ``lambda = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``,
* ``L = L_x + lambda_u r(e) L_u + L_reg`` with ``L_x = -mean sum_k p~_k log softmax(f(x~))_k``,
  ``L_u = mean (softmax(f(u~)) - q~)^2``, ``L_reg = sum_k pi_k log(pi_k / mean softmax(f(.))_k)`` (``pi`` uniform),
  ``r(e) = clip((e - warm-up) / 16 epochs, 0, 1)``.

The labelled and unlabelled samples of a step are those of the loop's batch; network 1 steps, then
network 2 (co-guessing with the updated network 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Batch, StepContext
from .gmm import low_mean_posterior
from .schedules import run_noise_level, scaled_epochs

#: CE warm-up (epochs of 300) per dataset; the unsupervised ramp-up, 16 epochs of 300.
WARMUP = {"cifar100": (30, 300)}
DEFAULT_WARMUP = (10, 300)
RAMPUP = (16, 300)
#: The paper's lambda_u per dataset: (noise level up to, lambda_u); the first row covering the run's level.
LAMBDA_U = {"cifar100": ((0.2, 25.0), (1.0, 150.0)),
            "default": ((0.2, 0.0), (0.8, 25.0), (1.0, 50.0))}
#: Noise models whose warm-up adds the confidence penalty (the paper's asymmetric noise).
PENALISED_NOISE = ("flip", "asym")


def warmup_epochs(config) -> int:
    published, total = WARMUP.get(config.dataset, DEFAULT_WARMUP)
    return scaled_epochs(config.dividemix_warmup, published, total, config.epochs, minimum=1)


def rampup_epochs(config) -> int:
    return scaled_epochs(None, *RAMPUP, config.epochs, minimum=1)


def lambda_u(config, noise_level: float | None) -> float:
    """``dividemix_lambda_u``, else the paper's value for the noise level (25 when it is unknown)."""
    if config.dividemix_lambda_u is not None:
        return float(config.dividemix_lambda_u)
    if noise_level is None:
        return 25.0
    if config.corruption_type in PENALISED_NOISE and not config.labels_from_file:
        return 0.0  # the paper's asymmetric setting
    for up_to, value in LAMBDA_U.get(config.dataset, LAMBDA_U["default"]):
        if noise_level <= up_to + 1e-12:
            return value
    return LAMBDA_U.get(config.dataset, LAMBDA_U["default"])[-1][1]


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p_k^(1/T) / sum_j p_j^(1/T)`` per row."""
    q = p ** (1.0 / temperature)
    return q / q.sum(1, keepdim=True)


def co_refine(one_hot: torch.Tensor, w: torch.Tensor, own_probs: torch.Tensor) -> torch.Tensor:
    """``w y + (1 - w) p``: the given label blended with the network's own averaged prediction."""
    return w[:, None] * one_hot + (1.0 - w[:, None]) * own_probs


def mixup_lambda(l: float) -> float:
    """``max(l, 1 - l)``: the mixed sample stays closer to its first input."""
    return max(l, 1.0 - l)


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """``sum_k pi_k log(pi_k / mean_i softmax(logits_i)_k)`` with the uniform prior ``pi_k = 1/K``."""
    mean = logits.softmax(1).mean(0)
    prior = torch.full_like(mean, 1.0 / mean.numel())
    return (prior * (prior / mean).log()).sum()


def dividemix_on_epoch_start(trainer) -> None:
    """After warm-up: each network's clean probabilities ``w`` from a GMM on its normalised losses."""
    cfg, state = trainer.config, trainer.ctx.state
    if "lambda_u" not in state:
        try:
            level = run_noise_level(cfg, trainer.data)
        except ConfigError:  # unknown noise rate: the unknown-rate default
            level = None
        state["lambda_u"] = lambda_u(cfg, level)
    if trainer.epoch < warmup_epochs(cfg):
        return
    for name, model in (("w_main", trainer.model), ("w_peer", trainer.peer)):
        losses = trainer.per_sample_losses(model)
        span = (losses.max() - losses.min()).clamp_min(1e-12)
        state[name] = low_mean_posterior((losses - losses.min()) / span)


def _mixmatch_loss(ctx: StepContext, net, other, x1, x2, labels, w, labelled, progress: float):
    """``(loss, L_x, L_u)`` of one network's MixMatch step on the batch split by ``labelled``."""
    cfg = ctx.config
    with torch.no_grad():
        own_1, own_2 = net(x1)[0].softmax(1), net(x2)[0].softmax(1)
        k = own_1.shape[1]
        lab, unl = labelled.nonzero().squeeze(1), (~labelled).nonzero().squeeze(1)
        one_hot = F.one_hot(labels[lab], k).to(own_1.dtype)
        target_x = sharpen(co_refine(one_hot, w[lab].to(own_1.dtype), (own_1[lab] + own_2[lab]) / 2),
                           cfg.dividemix_temperature)
        guess = (own_1[unl] + own_2[unl]) / 4
        if unl.numel():
            mode = other.training
            other.eval()
            guess = guess + (other(x1[unl])[0].softmax(1) + other(x2[unl])[0].softmax(1)) / 4
            other.train(mode)
        target_u = sharpen(guess, cfg.dividemix_temperature)
    l = mixup_lambda(float(torch.distributions.Beta(cfg.dividemix_alpha, cfg.dividemix_alpha).sample()))
    inputs = torch.cat([x1[lab], x2[lab], x1[unl], x2[unl]])
    targets = torch.cat([target_x, target_x, target_u, target_u])
    perm = torch.randperm(inputs.shape[0], device=inputs.device)
    mixed_x = l * inputs + (1 - l) * inputs[perm]
    mixed_t = l * targets + (1 - l) * targets[perm]
    logits, _ = net(mixed_x)
    n_x = 2 * lab.numel()
    zero = logits.sum() * 0.0
    loss_x = -(F.log_softmax(logits[:n_x], 1) * mixed_t[:n_x]).sum(1).mean() if n_x else zero
    loss_u = ((logits[n_x:].softmax(1) - mixed_t[n_x:]) ** 2).mean() if n_x < logits.shape[0] else zero
    ramp = min(max((progress - warmup_epochs(cfg)) / rampup_epochs(cfg), 0.0), 1.0)
    weight_u = ctx.state.get("lambda_u", lambda_u(cfg, cfg.corruption_level)) * ramp
    loss = loss_x + weight_u * loss_u + uniform_prior_penalty(logits)
    return loss, loss_x.detach(), loss_u.detach()


def _sgd(opt, loss) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _warmup_loss(logits: torch.Tensor, labels: torch.Tensor, penalise: bool) -> torch.Tensor:
    loss = F.cross_entropy(logits, labels)
    if penalise:  # negative entropy: penalises confident predictions
        probs = logits.softmax(1)
        loss = loss + (probs * F.log_softmax(logits, 1)).sum(1).mean()
    return loss


def dividemix_step(ctx: StepContext, batch: Batch) -> dict[str, torch.Tensor]:
    cfg, x, y = ctx.config, batch.x_silver, batch.y_silver
    if ctx.epoch < warmup_epochs(cfg) or "w_main" not in ctx.state:
        penalise = cfg.corruption_type in PENALISED_NOISE and not cfg.labels_from_file
        loss_1 = _warmup_loss(ctx.model(x)[0], y, penalise)
        loss_2 = _warmup_loss(ctx.peer(x)[0], y, penalise)
        ctx.opt.zero_grad(set_to_none=True)
        ctx.peer_opt.zero_grad(set_to_none=True)
        (loss_1 + loss_2).backward()
        ctx.opt.step()
        ctx.peer_opt.step()
        return {"train_loss": loss_1.detach(), "peer_loss": loss_2.detach()}
    x2 = batch.second_view()
    progress = ctx.epoch + ctx.step_in_epoch / ctx.steps_per_epoch
    out = {}
    threshold = cfg.dividemix_p_threshold
    for net, other, opt, w, key in ((ctx.model, ctx.peer, ctx.opt, ctx.state["w_peer"], "train_loss"),
                                    (ctx.peer, ctx.model, ctx.peer_opt, ctx.state["w_main"], "peer_loss")):
        w_batch = w[batch.index]
        loss, loss_x, loss_u = _mixmatch_loss(ctx, net, other, x, x2, y, w_batch, w_batch > threshold, progress)
        _sgd(opt, loss)
        out[key] = loss.detach()
        if key == "train_loss":
            out.update(labelled_loss=loss_x, unlabelled_loss=loss_u,
                       labelled_fraction=(w_batch > threshold).float().mean())
    return out
