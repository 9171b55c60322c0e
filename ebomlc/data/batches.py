"""Index streams over device-resident data: shuffled epochs and an endless gold stream."""
from __future__ import annotations

from typing import Iterator

import torch


def epoch_batches(n: int, bs: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """One shuffled pass: ``n // bs`` index batches of exactly ``bs`` (a ragged tail is dropped,
    so every step has the same shape); a set smaller than ``bs`` gives one batch of all of it."""
    perm = torch.randperm(n, generator=generator, device=device)
    if n < bs:
        yield perm
        return
    for i in range(n // bs):
        yield perm[i * bs:(i + 1) * bs]


def steps_per_epoch(n: int, bs: int) -> int:
    return max(1, n // bs)


class GoldStream:
    """Endless shuffled iterator over ``n`` gold indices, ``bs`` at a time (cycling through
    fresh permutations; a gold set smaller than ``bs`` repeats within a batch)."""

    def __init__(self, n: int, generator: torch.Generator, device: torch.device):
        self.n, self.generator, self.device = n, generator, device
        self.perm = torch.randperm(n, generator=generator, device=device)
        self.pos = 0

    def next(self, bs: int) -> torch.Tensor:
        parts, need = [], bs
        while need > 0:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
                self.pos = 0
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"perm": self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm = state["perm"].to(self.device)
        self.pos = int(state["pos"])
