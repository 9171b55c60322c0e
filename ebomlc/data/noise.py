"""Gold/silver split and synthetic label noise (SPEC.md, "Data and noise").

All functions are pure given their ``seed``: the same (dataset, noise type, level, gold
fraction, data seed) always yields the same split and noisy labels, whatever the method.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ConfigError


def uniform_matrix(level: float, num_classes: int) -> np.ndarray:
    """``C = level/K * 1 1^T + (1 - level) I``: the true label may be redrawn."""
    k = num_classes
    return np.full((k, k), level / k) + (1.0 - level) * np.eye(k)


def flip_matrix(level: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``1 - level`` on the diagonal and ``level`` on one other class per row, drawn uniformly."""
    k = num_classes
    c = (1.0 - level) * np.eye(k)
    for row in range(k):
        others = [j for j in range(k) if j != row]
        c[row, others[rng.integers(k - 1)]] += level
    return c


def corruption_matrix(kind: str, level: float, num_classes: int, seed: int) -> np.ndarray:
    """Row-stochastic ``C[true, noisy]`` for ``unif`` or ``flip`` noise."""
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"--corruption_level must lie in [0, 1], got {level!r}")
    if kind == "unif":
        return uniform_matrix(level, num_classes)
    if kind == "flip":
        return flip_matrix(level, num_classes, np.random.default_rng([seed, 1]))
    raise ConfigError(f"unknown corruption_type {kind!r}; choose one of: unif, flip")


def corrupt_labels(labels: np.ndarray, matrix: np.ndarray, seed: int) -> np.ndarray:
    """Draw each noisy label from ``matrix[true_label]`` (inverse-CDF sampling, vectorised)."""
    rng = np.random.default_rng([seed, 2])
    cdf = np.cumsum(matrix[labels], axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(len(labels))[:, None]
    return (u > cdf).sum(axis=1).astype(np.int64)


def gold_per_class(gold_fraction: float, num_train: int, num_classes: int) -> int:
    """``gold_fraction * N_train / K`` images per class (2% of CIFAR-10 -> 100 per class)."""
    n = int(gold_fraction * num_train / num_classes + 1e-9)
    if n < 1:
        need = num_classes / num_train
        raise ConfigError(
            f"--gold_fraction {gold_fraction:g} gives fewer than one gold image per class "
            f"({num_train} training images, {num_classes} classes); use at least {need:.4g}")
    return n


def _draw_per_class(labels: np.ndarray, num_classes: int, per_class: int, rng: np.random.Generator,
                    too_few: Callable[[int, int], str]) -> np.ndarray:
    """Sorted indices of ``per_class`` images of every class, drawn without replacement by ``rng``;
    ``too_few(c, n)`` is the error of a class ``c`` that has only ``n`` images."""
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ConfigError(too_few(c, len(members)))
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def split_gold_silver(labels: np.ndarray, num_classes: int, gold_fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced gold indices and the disjoint remaining silver indices (both sorted)."""
    per_class = gold_per_class(gold_fraction, len(labels), num_classes)
    gold = _draw_per_class(labels, num_classes, per_class, np.random.default_rng([seed, 0]),
                           lambda c, n: f"class {c} has only {n} training images, fewer than the "
                                        f"{per_class} gold images per class that --gold_fraction asks for")
    silver = np.setdiff1d(np.arange(len(labels)), gold)
    return gold, silver


def class_balanced_subset(labels: np.ndarray, num_classes: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size // K`` images of every class, drawn without replacement by ``seed``
    (taken before the gold/silver split, so gold and silver both come from the subset)."""
    per_class = size // num_classes
    if per_class < 1:
        raise ConfigError(f"--train_subset {size} gives fewer than one image per class ({num_classes} classes); "
                          f"use at least {num_classes}")
    most = num_classes * int(np.bincount(labels, minlength=num_classes).min())
    return _draw_per_class(labels, num_classes, per_class, np.random.default_rng([seed, 3]),
                           lambda c, n: f"--train_subset {size} asks for {per_class} images of class {c}, which "
                                        f"has only {n}; use at most {most}")


def fixed_subset(n: int, size: int | None) -> np.ndarray | None:
    """The first ``size`` of a permutation of ``range(n)`` fixed for every run (seed 0), sorted; None
    when ``size`` is None or covers everything. Evaluation subsets: every method sees the same images."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(0).permutation(n)[:size])
