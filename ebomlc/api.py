"""Label correction from Python: a trained run, or your own images and noisy labels in memory.

>>> from ebomlc.api import fit_correct
>>> table = fit_correct(x, noisy_labels, gold_indices, epochs=20)   # x: uint8 [N, C, H, W]
>>> table.head()          # likeliest labelling mistakes first

Both functions return the table of ``ebomlc correct``: one row per silver (non-gold) image with
``index``, ``path`` (when known), ``given_label``, ``corrected_label``, ``confidence``,
``given_label_prob`` and ``changed``, sorted by ascending ``given_label_prob``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .correct import correct_run, require_label_correcting, trainer_corrections
from .errors import DataError

__all__ = ["correct_labels", "fit_correct"]


def correct_labels(run_dir: str | Path, device: str = "cpu"):
    """The corrected-label table (a ``pandas.DataFrame``) of a run directory trained with
    ``ebomlc train --method mlc|mlcbome|ebomlc``; the same as ``ebomlc correct RUN_DIR``."""
    return correct_run(run_dir, device)


def _images(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]  # [N, H, W] grey images
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"{what} must be uint8 images of shape [N, C, H, W] (or [N, H, W]) with values 0..255, "
                        f"got {x.dtype} of shape {list(x.shape)}")
    return np.ascontiguousarray(x)


def fit_correct(x: np.ndarray, noisy_labels: Sequence[int], gold_indices: Sequence[int], num_classes: int | None = None,
                *, true_labels: Sequence[int] | None = None, x_test: np.ndarray | None = None,
                y_test: Sequence[int] | None = None, paths: Sequence[str] | None = None, method: str = "ebomlc",
                epochs: int = 20, flip: bool = False, seed: int = 1, device: str = "cpu", progress: bool = False,
                **options: Any):
    """Train a label-correcting meta model on in-memory images and return the corrected-label table.

    ``x``: uint8 images ``[N, C, H, W]``; ``noisy_labels``: the given label of each (0..K-1);
    ``gold_indices``: indices of the trusted images (their given labels are used as gold). The
    rest are corrected. ``true_labels`` (optional, e.g. for benchmarks) adds label-correction
    accuracy to the metrics. ``x_test``/``y_test`` is a clean held-out set for ``test_acc``
    (default: the gold set, which training also sees). Images smaller than 32 px train the small
    CNN of ``digits``, others ResNet-32. ``flip`` adds horizontal flips (natural photos).
    Further keyword ``options`` are :class:`~ebomlc.config.TrainConfig` fields (``bs``, ``main_lr``,
    ``meta_lr``, ``max_steps_per_epoch``, ...). The per-epoch metrics are in ``table.attrs["history"]``,
    the run summary in ``table.attrs["summary"]``.
    """
    from .config import TrainConfig
    from .data import RawDataset, build_labelled_data
    from .data.labels import check_gold, check_labels, label_array
    from .errors import ConfigError
    from .train import Trainer, resolve_device

    x = _images(x, "x")
    n = len(x)
    given = label_array(noisy_labels, "noisy_labels")
    if num_classes is None:
        seen = [given] + [label_array(a, what) for a, what in ((true_labels, "true_labels"), (y_test, "y_test"))
                          if a is not None]
        num_classes = int(max(int(a.max()) for a in seen if a.size)) + 1 if given.size else 0
    if num_classes < 2:
        raise DataError(f"num_classes must be at least 2, got {num_classes}")
    given = check_labels(given, n, num_classes, "noisy_labels")
    clean = check_labels(true_labels, n, num_classes, "true_labels") if true_labels is not None else None
    gold = check_gold(gold_indices, n, "gold_indices")
    if paths is not None and len(paths) != n:
        raise DataError(f"paths has {len(paths)} entries but x has {n} images")
    if x_test is None:
        x_test, y_test = x[gold], given[gold]
    else:
        x_test = _images(x_test, "x_test")
        if y_test is None:
            raise DataError("x_test needs y_test, its clean labels")
        y_test = check_labels(y_test, len(x_test), num_classes, "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"x_test images have shape {list(x_test.shape[1:])}, x has {list(x.shape[1:])}")
    require_label_correcting(method, "fit_correct got")
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {
        "method", "dataset", "epochs", "seed", "device", "data_dir", "download", "noisy_labels", "gold_indices",
        "noise_file", "noise_key", "corruption_type", "corruption_level"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"fit_correct got unknown option(s) {', '.join(unknown)}; options are TrainConfig "
                          f"fields such as bs, main_lr, meta_lr, max_steps_per_epoch")
    xf = x.astype(np.float64) / 255.0
    small = min(x.shape[2], x.shape[3]) < 32
    raw = RawDataset("custom", x, clean if clean is not None else given, x_test, y_test, num_classes,
                     mean=tuple(float(m) for m in xf.mean(axis=(0, 2, 3))),
                     std=tuple(float(s) + 1e-8 for s in xf.std(axis=(0, 2, 3))),
                     pad=1 if small else 4, flip=flip, train_paths=tuple(paths) if paths is not None else None)
    del xf
    # `dataset` names the kind of data here (only the reference variant reads it); the model is the
    # small CNN below 32 px and ResNet-32 otherwise unless `model=` says which.
    options = {"model": "small_cnn" if small else "resnet32", **options}
    config = TrainConfig(method=method, dataset="digits" if small else "cifar10", epochs=epochs, seed=seed,
                         device=device, **options).resolved()
    dev = resolve_device(config.device)
    data = build_labelled_data(raw, given, config.gold_fraction, config.data_seed, dev, clean=clean, gold=gold,
                               val_fraction=config.val_fraction, val_source=config.val_source)
    trainer = Trainer(config, data=data, device=dev)
    while trainer.epoch < config.epochs:
        row = trainer.run_epoch()
        if progress:
            print(f"epoch {row['epoch']}/{config.epochs}: test_acc {row['test_acc']:.4f}", flush=True)
    table = trainer_corrections(trainer, raw.train_paths)
    table.attrs["history"] = list(trainer.history)
    table.attrs["summary"] = trainer.summary()
    return table
