"""Forwards at look-ahead weights through ``torch.func.functional_call``.

Look-ahead weights are plain tensors; the live parameters are never touched. BatchNorm uses batch
statistics and, at look-ahead weights, updates only throw-away copies of the running buffers.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

from ..models import meta_gradient_only


def buffer_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


def call_at(model: nn.Module, names: Sequence[str], weights: Sequence[torch.Tensor], x: torch.Tensor,
            update_bn: bool = False):
    """``model(x)`` evaluated at ``weights`` (one per name). With ``update_bn`` the live running
    statistics are updated (the reference variant's behaviour); otherwise copies absorb it."""
    buffers = dict(model.named_buffers()) if update_bn else buffer_copies(model)
    return functional_call(model, ({**dict(zip(names, weights)), **buffers}), (x,))


def call_live(model: nn.Module, x: torch.Tensor):
    """``(model(x), names, weights)`` at the live parameters, through non-leaf views of them.

    Gradients taken with respect to the views equal those of the parameters, and ``backward``
    still reaches ``.grad``. Because the views are not leaves, a later differentiation of
    ``grad_w`` in the meta parameters alone skips every term in ``w`` (autograd cannot prune
    leaves under ``autograd.grad``; for convolutions that term is a full weight-gradient pass).
    """
    names, params = zip(*model.named_parameters())
    weights = [p.view_as(p) for p in params]
    return call_at(model, names, weights, x, update_bn=True), names, weights


def meta_look_ahead(loss: torch.Tensor, weights: Sequence[torch.Tensor],
                    lr: float) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """``(grad_w loss, w' = w - lr grad_w loss)`` with ``w'`` depending on the meta parameters only
    (``w`` detached). The graph of ``grad_w loss`` is kept for one derivative in meta parameters and
    built under :func:`meta_gradient_only`, so it holds no output gradients for terms in ``w``."""
    with meta_gradient_only():
        grads = torch.autograd.grad(loss, weights, create_graph=True)
    return grads, [p.detach() - lr * g for p, g in zip(weights, grads)]
