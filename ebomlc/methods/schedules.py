"""Published epoch counts scaled to a run's length, and the noise level a method reads from a run."""
from __future__ import annotations

from ..errors import ConfigError


def scaled_epochs(value: int | None, published: int, published_total: int, epochs: int, minimum: int = 0) -> int:
    """``value``, or ``round(epochs * published / published_total)`` (at least ``minimum``) when None: a
    method's published epoch count (e.g. 20 of 200) at the same fraction of this run's ``epochs``."""
    if value is not None:
        return int(value)
    return max(minimum, round(epochs * published / published_total))


def run_noise_level(config, data) -> float:
    """The noise rate of the run: ``corruption_level`` for synthetic noise; for label files the rate measured
    against the known clean labels (CIFAR-N: over the whole file, else over silver). Unknown: ConfigError."""
    if not config.labels_from_file:
        return float(config.corruption_level)
    rate = data.file_noise_rate if data.file_noise_rate is not None else data.realised_noise_rate()
    if rate is None:
        raise ConfigError(f"method {config.method} needs the noise rate of these labels and the clean labels are "
                          f"unknown; pass it with --forget_rate R")
    return float(rate)
