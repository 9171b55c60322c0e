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
    """Set each ``p.grad`` to its slice of a flat vector (views into it: no copies)."""
    for p, view in zip(params, torch.split(vector, [p.numel() for p in params])):
        p.grad = view.view_as(p)


def cosine(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return torch.dot(x, y) / (x.norm() * y.norm()).clamp_min(eps)
