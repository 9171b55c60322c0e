"""Data: raw datasets, validation hold-out, gold/silver split, label noise (synthetic or from label
files), device-resident batches."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .labels import check_labels, read_index_map, read_label_file, read_noise_labels, split_trusted
from ..config import VAL_SOURCES
from .noise import fixed_subset, noisy_labels, split_gold_silver, split_validation
from .sources import RawDataset, load_dataset

__all__ = ["NoisyData", "build_noisy_data", "build_labelled_data", "given_labels", "load_dataset",
           "cached_dataset", "RawDataset", "training_subset"]


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, data_dir: str | None, download: bool = False, image_size: int | None = None) -> RawDataset:
    """``load_dataset`` memoised per process: trials sharing a worker decode the data once."""
    return load_dataset(name, data_dir, download, image_size=image_size)


@dataclass
class NoisyData:
    """The noisy training problem, tensors on the training device.

    ``silver_noisy`` are the labels training sees; ``silver_true`` stay for diagnostics only and
    are None when the true labels are unknown (then label-correction metrics are absent).
    """

    name: str
    num_classes: int
    x_silver: torch.Tensor
    silver_noisy: torch.Tensor
    silver_true: torch.Tensor | None
    x_gold: torch.Tensor
    y_gold: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    pad: int
    flip: bool
    matrix: np.ndarray | None  # C[true, noisy] (empirical for label files; None if truth unknown)
    gold_index: np.ndarray  # indices into the training set
    silver_index: np.ndarray
    label_source: str = "synthetic"  # or "file": labels from --noisy_labels / --noise_file
    labels_sha1: str | None = None  # fingerprint of file labels and gold list (checked by `ebomlc correct`)
    class_names: tuple[str, ...] | None = None  # name of each class number (None: unnamed)
    file_noise_rate: float | None = None  # a label file's noise rate over all its entries (None: synthetic/unknown)
    # Validation set (None: none). ``val_source`` "clean"/"noisy": held out, never trained on (``val_index``
    # disjoint from gold and silver); "gold_reused": the gold set itself, which training sees.
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    val_index: np.ndarray | None = None
    val_source: str | None = None

    @property
    def in_channels(self) -> int:
        return int(self.x_silver.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_silver.shape[-1])

    def realised_noise_rate(self) -> float | None:
        """Fraction of silver labels that differ from the true label (None when truth is unknown)."""
        if self.silver_true is None:
            return None
        return float((self.silver_noisy != self.silver_true).float().mean())

    def evaluation_view(self, size: int | None) -> "NoisyData":
        """This data with the test, silver and validation sets each cut to the same fixed ``size`` images
        for every run (:func:`fixed_subset`); itself when ``size`` is None or covers them."""
        test, silver = fixed_subset(len(self.y_test), size), fixed_subset(len(self.silver_noisy), size)
        val = fixed_subset(len(self.y_val), size) if self.y_val is not None else None
        if test is None and silver is None and val is None:
            return self
        pick = lambda t, i: t if i is None or t is None else t[torch.from_numpy(i).to(t.device)]  # noqa: E731
        return dataclasses.replace(self, x_test=pick(self.x_test, test), y_test=pick(self.y_test, test),
                                   x_silver=pick(self.x_silver, silver), silver_noisy=pick(self.silver_noisy, silver),
                                   silver_true=pick(self.silver_true, silver), x_val=pick(self.x_val, val),
                                   y_val=pick(self.y_val, val))

    def summary(self) -> dict:
        out = {"dataset": self.name, "num_classes": self.num_classes, "n_gold": len(self.gold_index),
               "n_silver": len(self.silver_index), "n_test": int(self.y_test.numel()),
               "realised_noise_rate": self.realised_noise_rate()}
        if self.label_source != "synthetic":
            out.update(label_source=self.label_source, labels_sha1=self.labels_sha1,
                       file_noise_rate=self.file_noise_rate)
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.val_source is not None:
            out.update(n_val=int(self.y_val.numel()), val_source=self.val_source,
                       val_held_out=self.val_source != "gold_reused")
        return out


def training_subset(raw: RawDataset, index: np.ndarray) -> RawDataset:
    """``raw`` with only the training images ``index`` (the test set unchanged)."""
    paths = None if raw.train_paths is None else tuple(raw.train_paths[i] for i in index)
    return dataclasses.replace(raw, x_train=raw.x_train[index], y_train=raw.y_train[index], train_paths=paths)


def _check_val(val_fraction: float, val_source: str) -> bool:
    """True when a validation set is to be held out (``val_fraction > 0``); ConfigError on a bad pair."""
    if val_source not in VAL_SOURCES:
        raise ConfigError(f"unknown val_source {val_source!r}; choose one of: {', '.join(VAL_SOURCES)}")
    if val_source == "gold_reused" and val_fraction:
        raise ConfigError(f"--val_source gold_reused validates on the gold set itself and holds nothing out; "
                          f"drop --val_fraction {val_fraction:g} (or use --val_source clean or noisy)")
    return val_source != "gold_reused" and val_fraction > 0


def _hold_out_silver(silver: np.ndarray, noisy: np.ndarray, true: np.ndarray | None, num_classes: int,
                     val_fraction: float, seed: int, num_train: int):
    """``(val, y_val, silver, noisy, true)``: a class-balanced (by noisy label) validation set taken out of
    the silver images with their noisy labels, and what stays silver."""
    pick = split_validation(noisy, num_classes, val_fraction, seed, num_train, what="silver images")
    keep = np.ones(len(silver), dtype=bool)
    keep[pick] = False
    return (silver[pick], noisy[pick], silver[keep], noisy[keep], None if true is None else true[keep])


def build_noisy_data(raw: RawDataset, corruption_type: str, corruption_level: float,
                     gold_fraction: float, data_seed: int, device: torch.device | str = "cpu",
                     val_fraction: float = 0.0, val_source: str = "clean") -> NoisyData:
    """Split ``raw`` into gold/silver and corrupt silver labels (SPEC.md "Data and noise").

    With ``val_fraction > 0`` a class-balanced validation set of ``val_fraction * N / K`` images per class
    is held out: ``clean`` draws it (true labels) before the gold split, ``noisy`` draws it from the
    corrupted silver set (noisy labels). ``gold_reused`` validates on the gold set itself (nothing held out).
    """
    k = raw.num_classes
    held = _check_val(val_fraction, val_source)
    val = split_validation(raw.y_train, k, val_fraction, data_seed, len(raw.y_train)) if (
        held and val_source == "clean") else None
    gold, silver = split_gold_silver(raw.y_train, k, gold_fraction, data_seed, exclude=val)
    true = raw.y_train[silver]
    noisy, matrix = noisy_labels(corruption_type, corruption_level, true, k, data_seed,
                                 images=raw.x_train[silver] if corruption_type == "instance" else None,
                                 dataset=raw.name)
    y_val = None if val is None else raw.y_train[val]
    if held and val_source == "noisy":
        val, y_val, silver, noisy, true = _hold_out_silver(silver, noisy, true, k, val_fraction, data_seed,
                                                           len(raw.y_train))
    return _noisy_data(raw, gold, silver, noisy, true, matrix, device, y_gold=raw.y_train[gold],
                       val=_val(val, y_val, gold, raw.y_train[gold], val_source))


def _val(val: np.ndarray | None, y_val: np.ndarray | None, gold: np.ndarray, y_gold: np.ndarray,
         val_source: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """``(indices, labels, source)`` of the validation set, or None without one."""
    if val_source == "gold_reused":
        return gold, y_gold, val_source
    return None if val is None else (val, y_val, val_source)


def given_labels(raw: RawDataset, noisy_labels: str | None = None, noise_file: str | None = None,
                 noise_key: str | None = None,
                 noise_index: str | None = None) -> tuple[np.ndarray, np.ndarray, float | None]:
    """``(given, clean, file_noise_rate)``: the noisy labels of a label file for each training image, the
    known clean ones, and for a CIFAR-N file the rate of ``noise_key`` against ``clean_label`` over the
    whole file (None otherwise).

    The clean labels are the dataset's own (``raw.y_train``); a CIFAR-N file's ``clean_label`` must
    agree with them, which catches a training set in another order than the file's. ``noise_index``
    maps each training image to its entry of the file (an image folder in its own order).
    """
    n, k = len(raw.y_train), raw.num_classes
    if noise_file is None:
        return read_label_file(noisy_labels, n, k, raw.train_paths), raw.y_train, None
    labels, clean = read_noise_labels(noise_file, noise_key, k)
    file_rate = None if clean is None else float((labels != clean).mean())
    if noise_index is not None:
        index = read_index_map(noise_index, n, len(labels), raw.train_paths)
        labels, clean = labels[index], None if clean is None else clean[index]
    else:
        check_labels(labels, n, k, f"{noise_key} of {noise_file}")
    if clean is not None and not np.array_equal(clean, raw.y_train):
        bad = int((clean != raw.y_train).sum())
        how = ("check that the index map points each image at its own entry and that the class folders sort "
               "in the file's class order" if noise_index is not None else
               "CIFAR-N files follow the official python pickles; point --data_dir at those, or map an image "
               "folder with --noise_index")
        raise DataError(f"the clean labels of {noise_file} disagree with {raw.name}'s training labels on {bad} "
                        f"of {n} images: the file follows another image order ({how})")
    return labels, raw.y_train, file_rate


def build_labelled_data(raw: RawDataset, given: np.ndarray, gold_fraction: float, data_seed: int,
                        device: torch.device | str = "cpu", clean: np.ndarray | None = None,
                        gold: np.ndarray | None = None, file_noise_rate: float | None = None,
                        val_fraction: float = 0.0, val_source: str = "clean") -> NoisyData:
    """The noisy problem of given (e.g. real noisy) labels, one per training image of ``raw``.

    Gold is ``gold`` (trusted training indices; their given labels are used) or, without it, a
    class-balanced ``gold_fraction`` draw among images whose given label equals the ``clean`` one.
    Silver is the rest, with its given labels; its true labels are ``clean`` or unknown (None).
    A ``clean`` validation set (``val_fraction > 0``) is held out of the trusted images first (of the
    ``gold`` list when given, which keeps at least one gold image per class); a ``noisy`` one out of silver.
    """
    k, n = raw.num_classes, len(given)
    held = _check_val(val_fraction, val_source)
    val = y_val = None
    if gold is None:
        if clean is None:
            raise DataError("the true labels are unknown, so --gold_fraction cannot tell which images are "
                            "trusted; list them with --gold_indices FILE")
        if held and val_source == "clean":
            val = split_validation(clean, k, val_fraction, data_seed, n, among=np.flatnonzero(given == clean),
                                   what="trusted images (given label = clean label)")
        gold, silver = split_trusted(given, clean, k, gold_fraction, data_seed, exclude=val)
    else:
        gold = np.unique(np.asarray(gold, dtype=np.int64))
        if held and val_source == "clean":
            val = split_validation(given, k, val_fraction, data_seed, n, among=gold, what="images of the gold list")
            gold = np.setdiff1d(gold, val)
            short = [c for c in range(k) if not (given[gold] == c).any()]
            if short:
                raise DataError(f"--val_fraction {val_fraction:g} holds out every gold image of class {short[0]}, "
                                f"leaving it no gold image; lower --val_fraction or list more trusted images")
        silver = np.setdiff1d(np.arange(n), gold if val is None else np.union1d(gold, val))
    if val is not None:
        y_val = given[val]
    true = clean[silver] if clean is not None else None
    noisy = given[silver]
    if held and val_source == "noisy":
        val, y_val, silver, noisy, true = _hold_out_silver(silver, noisy, true, k, val_fraction, data_seed, n)
    matrix = None
    if true is not None:
        k = raw.num_classes
        counts = np.bincount(true * k + noisy, minlength=k * k).reshape(k, k).astype(np.float64)
        matrix = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    h = hashlib.sha1()
    for a in (gold, given[gold], silver, noisy):
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return _noisy_data(raw, gold, silver, noisy, true, matrix, device, label_source="file",
                       labels_sha1=h.hexdigest(), y_gold=given[gold], file_noise_rate=file_noise_rate,
                       val=_val(val, y_val, gold, given[gold], val_source))


def _noisy_data(raw: RawDataset, gold: np.ndarray, silver: np.ndarray, noisy: np.ndarray,
                true: np.ndarray | None, matrix: np.ndarray | None, device, y_gold: np.ndarray,
                val: tuple[np.ndarray, np.ndarray, str] | None = None, **extra) -> NoisyData:
    dev = torch.device(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    if val is not None:
        index, labels, source = val
        extra.update(x_val=t(raw.x_train[index]), y_val=t(labels), val_index=index, val_source=source)

    return NoisyData(
        name=raw.name, num_classes=raw.num_classes,
        x_silver=t(raw.x_train[silver]), silver_noisy=t(noisy), silver_true=None if true is None else t(true),
        x_gold=t(raw.x_train[gold]), y_gold=t(y_gold),
        x_test=t(raw.x_test), y_test=t(raw.y_test),
        mean=torch.tensor(raw.mean, dtype=torch.float32, device=dev),
        std=torch.tensor(raw.std, dtype=torch.float32, device=dev),
        pad=raw.pad, flip=raw.flip, matrix=matrix, gold_index=gold, silver_index=silver,
        class_names=raw.class_names, **extra)
