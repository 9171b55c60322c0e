"""Forwards at look-ahead weights through ``torch.func.functional_call``.

Look-ahead weights are plain tensors; the live parameters are never touched. BatchNorm uses batch
statistics and, at look-ahead weights, updates only throw-away copies of the running buffers.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call


def buffer_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


def call_at(model: nn.Module, names: Sequence[str], weights: Sequence[torch.Tensor], x: torch.Tensor,
            update_bn: bool = False):
    """``model(x)`` evaluated at ``weights`` (one per name). With ``update_bn`` the live running
    statistics are updated (the reference variant's behaviour); otherwise copies absorb it."""
    buffers = dict(model.named_buffers()) if update_bn else buffer_copies(model)
    return functional_call(model, ({**dict(zip(names, weights)), **buffers}), (x,))
