"""Data: raw datasets, gold/silver split, label noise (synthetic or from label files),
device-resident batches."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from .labels import check_labels, read_index_map, read_label_file, read_noise_labels, split_trusted
from .noise import fixed_subset, noisy_labels, split_gold_silver
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
        """This data with the test and silver sets cut to the same fixed ``size`` images for every run
        (:func:`fixed_subset`); itself when ``size`` is None or covers them."""
        test, silver = fixed_subset(len(self.y_test), size), fixed_subset(len(self.silver_noisy), size)
        if test is None and silver is None:
            return self
        pick = lambda t, i: t if i is None or t is None else t[torch.from_numpy(i).to(t.device)]  # noqa: E731
        return dataclasses.replace(self, x_test=pick(self.x_test, test), y_test=pick(self.y_test, test),
                                   x_silver=pick(self.x_silver, silver), silver_noisy=pick(self.silver_noisy, silver),
                                   silver_true=pick(self.silver_true, silver))

    def summary(self) -> dict:
        out = {"dataset": self.name, "num_classes": self.num_classes, "n_gold": len(self.gold_index),
               "n_silver": len(self.silver_index), "n_test": int(self.y_test.numel()),
               "realised_noise_rate": self.realised_noise_rate()}
        if self.label_source != "synthetic":
            out.update(label_source=self.label_source, labels_sha1=self.labels_sha1,
                       file_noise_rate=self.file_noise_rate)
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out


def training_subset(raw: RawDataset, index: np.ndarray) -> RawDataset:
    """``raw`` with only the training images ``index`` (the test set unchanged)."""
    paths = None if raw.train_paths is None else tuple(raw.train_paths[i] for i in index)
    return dataclasses.replace(raw, x_train=raw.x_train[index], y_train=raw.y_train[index], train_paths=paths)


def build_noisy_data(raw: RawDataset, corruption_type: str, corruption_level: float,
                     gold_fraction: float, data_seed: int, device: torch.device | str = "cpu") -> NoisyData:
    """Split ``raw`` into gold/silver and corrupt silver labels (SPEC.md "Data and noise")."""
    gold, silver = split_gold_silver(raw.y_train, raw.num_classes, gold_fraction, data_seed)
    true = raw.y_train[silver]
    noisy, matrix = noisy_labels(corruption_type, corruption_level, true, raw.num_classes, data_seed,
                                 images=raw.x_train[silver] if corruption_type == "instance" else None,
                                 dataset=raw.name)
    return _noisy_data(raw, gold, silver, noisy, true, matrix, device, y_gold=raw.y_train[gold])


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
                        gold: np.ndarray | None = None, file_noise_rate: float | None = None) -> NoisyData:
    """The noisy problem of given (e.g. real noisy) labels, one per training image of ``raw``.

    Gold is ``gold`` (trusted training indices; their given labels are used) or, without it, a
    class-balanced ``gold_fraction`` draw among images whose given label equals the ``clean`` one.
    Silver is the rest, with its given labels; its true labels are ``clean`` or unknown (None).
    """
    if gold is None:
        if clean is None:
            raise DataError("the true labels are unknown, so --gold_fraction cannot tell which images are "
                            "trusted; list them with --gold_indices FILE")
        gold, silver = split_trusted(given, clean, raw.num_classes, gold_fraction, data_seed)
    else:
        gold = np.unique(np.asarray(gold, dtype=np.int64))
        silver = np.setdiff1d(np.arange(len(given)), gold)
    true = clean[silver] if clean is not None else None
    noisy = given[silver]
    matrix = None
    if true is not None:
        k = raw.num_classes
        counts = np.bincount(true * k + noisy, minlength=k * k).reshape(k, k).astype(np.float64)
        matrix = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    h = hashlib.sha1()
    for a in (gold, given[gold], silver, noisy):
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return _noisy_data(raw, gold, silver, noisy, true, matrix, device, label_source="file",
                       labels_sha1=h.hexdigest(), y_gold=given[gold], file_noise_rate=file_noise_rate)


def _noisy_data(raw: RawDataset, gold: np.ndarray, silver: np.ndarray, noisy: np.ndarray,
                true: np.ndarray | None, matrix: np.ndarray | None, device, y_gold: np.ndarray,
                **extra) -> NoisyData:
    dev = torch.device(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    return NoisyData(
        name=raw.name, num_classes=raw.num_classes,
        x_silver=t(raw.x_train[silver]), silver_noisy=t(noisy), silver_true=None if true is None else t(true),
        x_gold=t(raw.x_train[gold]), y_gold=t(y_gold),
        x_test=t(raw.x_test), y_test=t(raw.y_test),
        mean=torch.tensor(raw.mean, dtype=torch.float32, device=dev),
        std=torch.tensor(raw.std, dtype=torch.float32, device=dev),
        pad=raw.pad, flip=raw.flip, matrix=matrix, gold_index=gold, silver_index=silver,
        class_names=raw.class_names, **extra)
