"""Batched augmentation in plain torch: per-sample random crop + horizontal flip + normalise.

Works on uint8 ``[B, C, H, W]`` batches already on the training device; no per-image Python work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32."""
    return (x_uint8.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``pad``, crop back to the input size at a random offset per sample, and
    mirror a random half of the samples horizontally (if ``flip``)."""
    b, _, h, w = x.shape
    dev = x.device
    if pad > 0:
        padded = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect").to(x.dtype)
        oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # [B, H, 1]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # [B, 1, W]
        batch = torch.arange(b, device=dev)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [B, C, H, W]
    if flip:
        mirror = torch.rand(b, device=dev, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x.contiguous()
