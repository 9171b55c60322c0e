"""Gold/silver split and synthetic label noise (SPEC.md, "Data and noise").

All functions are pure given their ``seed``: the same (dataset, noise type, level, gold
fraction, data seed) always yields the same split and noisy labels, whatever the method.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..config import CORRUPTION_TYPES  # one list of the noise models (config stays torch-free)
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


def _check_level(level: float) -> None:
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"--corruption_level must lie in [0, 1], got {level!r}")


# Fine label -> superclass of CIFAR-100 (the ``coarse_labels`` of the official pickle, per fine label).
CIFAR100_COARSE = (4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
                   6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
                   5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
                   10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
                   16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)


def _superclass_cycles(coarse: tuple[int, ...]) -> dict[int, int]:
    """Each fine class -> the next fine class of its superclass (cyclic, in increasing fine-label order)."""
    pairs = {}
    for c in sorted(set(coarse)):
        members = [f for f, g in enumerate(coarse) if g == c]
        pairs.update(zip(members, members[1:] + members[:1]))
    return pairs


# Class pairs of asym noise (Patrini et al. 2017), true -> noisy, and each map's class count.
ASYM_PAIRS: dict[str, dict[int, int]] = {
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},  # truck->automobile, bird->airplane, deer->horse, cat<->dog
    "cifar100": _superclass_cycles(CIFAR100_COARSE),
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},  # the MNIST map
}
ASYM_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}


def asym_matrix(level: float, num_classes: int, dataset: str | None) -> np.ndarray:
    """``C[i, i] = 1 - level`` and ``C[i, target(i)] = level`` for the mapped classes ``i`` of
    :data:`ASYM_PAIRS`; identity rows for the others. CIFAR-100 maps each fine class to the next one
    of its real superclass (some public code groups consecutive blocks of 5 labels instead)."""
    _check_level(level)
    if dataset not in ASYM_PAIRS:
        name = "a dataset without a name" if dataset is None else dataset
        raise ConfigError(f"asym noise has class pairs for cifar10, cifar100 and digits only; for {name} "
                          f"use unif, flip or instance")
    if num_classes != ASYM_NUM_CLASSES[dataset]:
        raise ConfigError(f"asym noise for {dataset} maps {ASYM_NUM_CLASSES[dataset]} classes, but the data has "
                          f"{num_classes}")
    c = np.eye(num_classes)
    for i, j in ASYM_PAIRS[dataset].items():
        c[i, i], c[i, j] = 1.0 - level, level
    return c


def corruption_matrix(kind: str, level: float, num_classes: int, seed: int,
                      dataset: str | None = None) -> np.ndarray:
    """Row-stochastic ``C[true, noisy]`` for ``unif``, ``flip`` or ``asym`` noise (``asym`` needs ``dataset``)."""
    _check_level(level)
    if kind == "unif":
        return uniform_matrix(level, num_classes)
    if kind == "flip":
        return flip_matrix(level, num_classes, np.random.default_rng([seed, 1]))
    if kind == "asym":
        return asym_matrix(level, num_classes, dataset)
    if kind == "instance":
        raise ConfigError("instance noise has no fixed corruption matrix; draw it with noisy_labels(..., images=...)")
    raise ConfigError(f"unknown corruption_type {kind!r}; choose one of: {', '.join(CORRUPTION_TYPES)}")


def corrupt_labels(labels: np.ndarray, matrix: np.ndarray, seed: int) -> np.ndarray:
    """Draw each noisy label from ``matrix[true_label]`` (inverse-CDF sampling, vectorised)."""
    rng = np.random.default_rng([seed, 2])
    cdf = np.cumsum(matrix[labels], axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(len(labels))[:, None]
    return (u > cdf).sum(axis=1).astype(np.int64)


_MAX_SIDE = 32  # images are block-pooled to at most 32x32 before the instance-noise projections
_CHUNK = 4096  # images per block of the projections (bounds memory)


def _check_images(images: np.ndarray | None) -> None:
    if images is None or images.ndim != 4 or images.dtype != np.uint8:
        got = "None" if images is None else f"{images.dtype} {tuple(images.shape)}"
        raise ConfigError(f"instance noise needs the training images as uint8 [N, C, H, W], got {got}")


def _pooled_sums(images: np.ndarray) -> tuple[np.ndarray, float]:
    """Flattened ``f x f`` block sums of ``images`` (zero-padded; ``f`` makes H, W at most 32), as exact
    integers in float64, and the divisor ``255 f^2`` that turns them into block means in [0, 1]."""
    n, ch, h, w = images.shape
    f = -(-max(h, w) // _MAX_SIDE)
    x = images.astype(np.float64)
    if f > 1:
        x = np.pad(x, ((0, 0), (0, 0), (0, -h % f), (0, -w % f)))
        x = x.reshape(n, ch, x.shape[2] // f, f, x.shape[3] // f, f).sum(axis=(3, 5))
    return x.reshape(n, ch * x.shape[2] * x.shape[3]), 255.0 * f * f


def _blocks(index: np.ndarray) -> Iterator[np.ndarray]:
    return (index[i:i + _CHUNK] for i in range(0, len(index), _CHUNK))


def instance_flip_rates(images: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Per-image flip probability ``q_i = clip(level + sigma z_i, 0, 1)``, ``sigma = min(0.1, level/3,
    (1 - level)/3)``, where ``z`` z-scores the projections ``x_i . v`` of the pooled images onto a seeded
    Gaussian direction ``v`` (all zeros when every projection is equal)."""
    _check_level(level)
    _check_images(images)
    d = _pooled_sums(images[:1])[0].shape[1]
    # v is rounded to integers: with integer block sums every dot product is exact in float64 (partial
    # sums stay below 2**53 for images up to ~10**7 pixels), so identical images get identical projections.
    v = np.round(np.random.default_rng([seed, 4]).standard_normal(d) * 2.0 ** 16)
    blocks = _blocks(np.arange(len(images)))
    proj = np.concatenate([np.zeros(0)] + [_pooled_sums(images[b])[0] @ v for b in blocks])
    std = proj.std() if len(proj) else 0.0
    z = (proj - proj.mean()) / std if std > 0 else np.zeros_like(proj)
    sigma = min(0.1, level / 3, (1.0 - level) / 3)
    return np.clip(level + sigma * z, 0.0, 1.0)


def instance_noisy_labels(images: np.ndarray, labels: np.ndarray, level: float, num_classes: int,
                          seed: int) -> np.ndarray:
    """Instance-dependent noise (Xia et al. 2020): image ``i`` of true class ``y`` keeps ``y`` with
    probability ``1 - q_i`` (:func:`instance_flip_rates`) and goes to ``k != y`` with probability
    ``q_i softmax_k(x_i W_y)``, ``x_i`` its pooled pixels in [0, 1] centred on their mean over
    ``images`` and ``W_y`` a seeded Gaussian [D, K] per class. So ``P(noisy_i != y_i) = q_i``."""
    _check_images(images)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise ConfigError(f"instance noise needs one label per image, got {len(labels)} labels for "
                          f"{len(images)} images")
    q = instance_flip_rates(images, level, seed)
    first, scale = _pooled_sums(images[:1])
    total = sum((_pooled_sums(images[b])[0].sum(axis=0) for b in _blocks(np.arange(len(images)))),
                start=np.zeros(first.shape[1]))
    mean = total / (max(len(images), 1) * scale)
    w_rng = np.random.default_rng([seed, 5])
    u = 1.0 - np.random.default_rng([seed, 6]).random(len(images))  # in (0, 1]: q = 0 always keeps y
    noisy = labels.copy()
    for y in range(num_classes):
        w = w_rng.standard_normal((len(mean), num_classes))  # drawn for every class, in class order
        for b in _blocks(np.flatnonzero(labels == y)):
            logits = (_pooled_sums(images[b])[0] / scale - mean) @ w
            logits[:, y] = -np.inf
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p *= (q[b] / p.sum(axis=1))[:, None]
            p[:, y] = 1.0 - q[b]
            cdf = np.cumsum(p, axis=1)
            cdf[:, -1] = 1.0
            noisy[b] = (u[b, None] > cdf).sum(axis=1)
    return noisy


def noisy_labels(kind: str, level: float, labels: np.ndarray, num_classes: int, seed: int,
                 images: np.ndarray | None = None, dataset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, C[true, noisy])`` for any of :data:`CORRUPTION_TYPES`. For ``instance`` noise
    (which needs ``images``) ``C`` is the empirical row-normalised transition matrix of the drawn
    labels, with identity rows for classes without images."""
    _check_level(level)
    if kind != "instance":
        matrix = corruption_matrix(kind, level, num_classes, seed, dataset=dataset)
        return corrupt_labels(labels, matrix, seed), matrix
    if images is None:
        raise ConfigError("instance noise depends on the images: pass the training images")
    noisy = instance_noisy_labels(images, labels, level, num_classes, seed)
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (np.asarray(labels, dtype=np.int64), noisy), 1.0)
    rows = counts.sum(axis=1)
    counts[rows == 0] = np.eye(num_classes)[rows == 0]
    return noisy, counts / np.maximum(rows, 1.0)[:, None]


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


def split_gold_silver(labels: np.ndarray, num_classes: int, gold_fraction: float, seed: int,
                      exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced gold indices and the disjoint remaining silver indices (both sorted). ``exclude``
    (held-out validation images) is in neither; the gold count per class still counts the whole set."""
    per_class = gold_per_class(gold_fraction, len(labels), num_classes)
    left = " left after the validation images" if exclude is not None else ""
    gold = _draw_per_class(_without(labels, exclude), num_classes, per_class, np.random.default_rng([seed, 0]),
                           lambda c, n: f"class {c} has only {n} training images{left}, fewer than the "
                                        f"{per_class} gold images per class that --gold_fraction asks for"
                                        + ("; lower --val_fraction or --gold_fraction" if left else ""))
    silver = np.setdiff1d(np.arange(len(labels)), gold if exclude is None else np.union1d(gold, exclude))
    return gold, silver


def _without(labels: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """``labels`` with the entries at ``exclude`` set to -1 (no class), so no draw picks them."""
    if exclude is None:
        return labels
    out = np.array(labels, dtype=np.int64, copy=True)
    out[exclude] = -1
    return out


def val_per_class(val_fraction: float, num_train: int, num_classes: int) -> int:
    """``val_fraction * N_train / K`` validation images per class (at least one)."""
    n = int(val_fraction * num_train / num_classes + 1e-9)
    if n < 1:
        raise ConfigError(f"--val_fraction {val_fraction:g} gives fewer than one validation image per class "
                          f"({num_train} training images, {num_classes} classes); use at least "
                          f"{num_classes / num_train:.4g}")
    return n


def split_validation(labels: np.ndarray, num_classes: int, val_fraction: float, seed: int, num_train: int,
                     among: np.ndarray | None = None, what: str = "training images") -> np.ndarray:
    """Sorted positions (into ``labels``) of ``val_fraction * num_train / K`` images of every class,
    drawn without replacement by ``seed`` among the positions ``among`` (default: all): the held-out
    validation set. ``labels`` are the labels the set is balanced on (clean or noisy)."""
    per_class = val_per_class(val_fraction, num_train, num_classes)
    pool = np.full(len(labels), -1, dtype=np.int64)
    keep = np.arange(len(labels)) if among is None else np.asarray(among, dtype=np.int64)
    pool[keep] = np.asarray(labels, dtype=np.int64)[keep]
    return _draw_per_class(pool, num_classes, per_class, np.random.default_rng([seed, 7]),
                           lambda c, n: f"--val_fraction {val_fraction:g} asks for {per_class} validation images of "
                                        f"class {c}, but only {n} {what} of that class are there to hold out; "
                                        f"lower --val_fraction")


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
