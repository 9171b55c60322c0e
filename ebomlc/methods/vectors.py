"""Gradient-vector algebra over parameter lists, done on flattened buffers (one kernel each)."""
from __future__ import annotations

from typing import Sequence

import torch


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one 1-d vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grads(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    """Flatten gradients, with zeros where autograd returned None (an unused parameter)."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, like)])


def unflat_to_grad(vector: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    """Write a flat vector into ``p.grad`` for each parameter (views, no copies of the model)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = vector[offset:offset + n].view_as(p).clone()
        offset += n


def cosine(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return torch.dot(x, y) / (x.norm() * y.norm()).clamp_min(eps)
