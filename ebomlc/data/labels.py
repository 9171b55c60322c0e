"""Label sources other than synthetic noise: the user's own noisy labels and trusted (gold) lists.

Pure readers, each validating what it reads and raising :class:`DataError` with one line:

- :func:`read_label_file` -- one label per training image, in dataset order: ``.npy``, ``.csv``/``.txt``
  (one label per line, optional header), or a ``path,label`` CSV matched against an image folder;
- :func:`read_noise_labels` -- CIFAR-10N / CIFAR-100N label files (``.pt`` dicts of label arrays);
  :func:`read_noise_file` checks one entry per training image;
- :func:`read_index_map` -- each training image's entry in such a file (image folders in another order);
- :func:`read_gold_list` -- trusted training images: indices in dataset order (or image paths);
- :func:`split_trusted` -- a class-balanced ``--gold_fraction`` draw among trusted images.
"""
from __future__ import annotations

import csv
from pathlib import Path, PurePath
from typing import Sequence

import numpy as np

from ..errors import DataError
from .noise import gold_per_class

#: Keys of the CIFAR-N files (http://noisylabels.com): CIFAR-10N and CIFAR-100N.
CIFAR_N_KEYS = ("clean_label", "aggre_label", "random_label1", "random_label2", "random_label3",
                "worse_label", "noisy_label", "noisy_coarse_label", "clean_coarse_label")


# ---------------------------------------------------------------------------- validation
def label_array(labels: np.ndarray, what: str) -> np.ndarray:
    """``labels`` as a 1-D int64 array of whole class numbers, or a one-line DataError."""
    a = np.asarray(labels)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise DataError(f"{what} must be a 1-D list of labels, got an array of shape {list(a.shape)}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{what} must hold whole class numbers, found non-integer values")
    elif a.dtype.kind not in "iub":
        raise DataError(f"{what} must hold integer class numbers, got {a.dtype} values")
    return a.astype(np.int64)


def check_labels(labels: np.ndarray, num_train: int, num_classes: int, what: str) -> np.ndarray:
    """``labels`` as int64 ``[num_train]`` in ``0..num_classes-1``, or a one-line DataError."""
    a = label_array(labels, what)
    if len(a) != num_train:
        raise DataError(f"{what} has {len(a)} labels but the training set has {num_train} images; "
                        f"give exactly one label per training image, in dataset order")
    bad = (a < 0) | (a >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} has {int(bad.sum())} labels outside 0..{num_classes - 1} (first: {a[i]} at "
                        f"index {i}); labels are class numbers 0..{num_classes - 1}")
    return a


def _path_keys(path: str) -> list[str]:
    """The names a training image may go by in a label file: absolute, ``train/cls/f``, ``cls/f``."""
    parts = PurePath(path).parts
    return [PurePath(path).as_posix(), "/".join(parts[-3:]), "/".join(parts[-2:])]


def _path_lookup(train_paths: Sequence[str]) -> dict[str, int]:
    lookup: dict[str, int] = {}
    for i, p in enumerate(train_paths):
        for key in _path_keys(p):
            lookup.setdefault(key, i)
    return lookup


def _match_paths(names: list[str], train_paths: Sequence[str], what: str) -> np.ndarray:
    """Training-set index of each name (absolute path or ``[train/]class/file``)."""
    lookup = _path_lookup(train_paths)
    index, unknown = [], []
    for name in names:
        key = name.strip().replace("\\", "/")
        key = key[2:] if key.startswith("./") else key
        if Path(key).is_absolute():
            key = Path(key).resolve().as_posix()
        i = lookup.get(key)
        (unknown.append(name) if i is None else index.append(i))
    if unknown:
        if not index:
            raise DataError(f"none of the {len(names)} paths in {what} is a training image (first: {unknown[0]!r}); "
                            f"write paths as class/file relative to the train/ folder, e.g. "
                            f"{'/'.join(PurePath(train_paths[0]).parts[-2:])!r}")
        raise DataError(f"{len(unknown)} paths in {what} are not training images (first: {unknown[0]!r}); "
                        f"write paths as class/file relative to the train/ folder")
    return np.asarray(index, dtype=np.int64)


# ---------------------------------------------------------------------------- noisy labels
def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as CSV text ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise DataError(f"{path} is empty")
    return rows


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_label_file(path: str | Path, num_train: int, num_classes: int,
                    train_paths: Sequence[str] | None = None) -> np.ndarray:
    """One noisy label per training image (int64 ``[num_train]``), from ``.npy`` or CSV text.

    A CSV holds either one label per line (an optional header line is skipped) in dataset order,
    or ``path,label`` rows naming every training image of an image-folder dataset (any order).
    """
    path = Path(path)
    what = f"label file {path}"
    if path.suffix.lower() == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path} as a .npy array ({exc})") from None
        return check_labels(labels, num_train, num_classes, what)
    if path.suffix.lower() not in (".csv", ".txt", ".tsv"):
        raise DataError(f"{what}: unknown format {path.suffix!r}; use .npy, or .csv with one label per line "
                        f"(or path,label rows for an image folder)")
    rows = _read_rows(path)
    width = len(rows[-1])
    if width == 1:
        values = [r[0] for r in rows]
        if not _is_int(values[0]):
            values = values[1:]  # a header
        bad = next((v for v in values if not _is_int(v)), None)
        if bad is not None:
            raise DataError(f"{what} has a non-integer label {bad!r}; write one class number per line")
        return check_labels(np.array([int(v) for v in values], dtype=np.int64), num_train, num_classes, what)
    if width != 2 or any(len(r) != 2 for r in rows[1:]):
        raise DataError(f"{what} must have one column (label) or two (path,label), found rows with "
                        f"{sorted({len(r) for r in rows})} columns")
    if train_paths is None:
        raise DataError(f"{what} has path,label rows, which need an image-folder --data_dir (train/<class>/*); "
                        f"for other datasets write one label per line in dataset order")
    if not _is_int(rows[0][1]):
        rows = rows[1:]  # a header
    bad = next((r[1] for r in rows if not _is_int(r[1])), None)
    if bad is not None:
        raise DataError(f"{what} has a non-integer label {bad!r}; the second column is the class number")
    index = _match_paths([r[0] for r in rows], train_paths, what)
    counts = np.bincount(index, minlength=num_train)
    if (counts > 1).any():
        i = int(np.flatnonzero(counts > 1)[0])
        raise DataError(f"{what} labels {train_paths[i]!r} more than once; give each image one label")
    if (counts == 0).any():
        i = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"{what} has no label for {int((counts == 0).sum())} of the {num_train} training images "
                        f"(first: {train_paths[i]!r}); label every training image")
    labels = np.empty(num_train, dtype=np.int64)
    labels[index] = [int(r[1]) for r in rows]
    return check_labels(labels, num_train, num_classes, what)


def _numpy_safe_globals() -> list:
    """What ``torch.load(weights_only=True)`` needs to read numpy arrays (old and new numpy names)."""
    core = getattr(np, "_core", None) or np.core
    out: list = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(core.multiarray._reconstruct, f"{module}._reconstruct"),
                (core.multiarray.scalar, f"{module}.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def load_noise_dict(path: str | Path) -> dict:
    """The dict of a CIFAR-N style ``.pt`` file, read with ``weights_only=True`` (no code runs)."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        try:
            allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
                       for g in _numpy_safe_globals()}
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        except Exception:  # noqa: BLE001 - not a zip checkpoint: keep the loader's message
            unsafe = []
        if unsafe:
            detail = (f"it holds Python objects other than label arrays ({', '.join(unsafe[:3])}), which are not "
                      f"loaded for safety; save plain numpy arrays or tensors")
        raise DataError(f"cannot read {path} as a CIFAR-N label file (a torch .pt dict of label arrays): "
                        f"{detail}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict of label arrays like CIFAR-10N's "
                        f"(keys such as clean_label, worse_label)")
    return obj


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def read_noise_labels(path: str | Path, key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(labels[key], clean_label or None)`` of a CIFAR-10N / CIFAR-100N ``.pt`` file, all its entries
    (in the file's own order: the official CIFAR training order), each in ``0..num_classes-1``."""
    path = Path(path)
    d = load_noise_dict(path)
    keys = sorted(str(k) for k in d)
    if key not in d:
        raise DataError(f"--noise_key {key!r} is not in {path}; it has: {', '.join(keys)}")
    if "coarse" in key and num_classes != 20:
        raise DataError(f"--noise_key {key} holds CIFAR-100's 20 superclasses but the dataset has {num_classes} "
                        f"classes; use --noise_key noisy_label (fine labels)")
    labels = label_array(_as_array(d[key]), f"{key} of {path}")
    labels = check_labels(labels, len(labels), num_classes, f"{key} of {path}")
    clean_key = "clean_coarse_label" if "coarse" in key else "clean_label"
    clean = None
    if clean_key in d:
        clean = check_labels(_as_array(d[clean_key]), len(labels), num_classes, f"{clean_key} of {path}")
    return labels, clean


def read_noise_file(path: str | Path, key: str, num_train: int,
                    num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`read_noise_labels` of a file with exactly one entry per training image, in dataset order."""
    labels, clean = read_noise_labels(path, key, num_classes)
    check_labels(labels, num_train, num_classes, f"{key} of {path}")
    return labels, clean


def read_index_map(path: str | Path, num_train: int, num_entries: int,
                   train_paths: Sequence[str] | None = None) -> np.ndarray:
    """Each training image's index into a label file of ``num_entries`` entries (int64 ``[num_train]``,
    distinct): ``.npy`` or one index per line in dataset order, or ``path,index`` rows naming every
    image of an image folder (any order)."""
    path = Path(path)
    what = f"index map {path}"
    if path.suffix.lower() == ".npy":
        try:
            index = label_array(np.load(path, allow_pickle=False), what)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path} as a .npy array ({exc})") from None
    else:
        rows = _read_rows(path)
        if len(rows[-1]) not in (1, 2) or any(len(r) != len(rows[-1]) for r in rows[1:]):
            raise DataError(f"{what} must have one column (index, dataset order) or two (path,index)")
        if not _is_int(rows[0][-1]):
            rows = rows[1:]  # a header
        bad = next((r[-1] for r in rows if not _is_int(r[-1])), None)
        if bad is not None:
            raise DataError(f"{what} has a non-integer index {bad!r}; give 0-based indices into the label file")
        values = np.array([int(r[-1]) for r in rows], dtype=np.int64)
        if len(rows[-1]) == 1:
            index = values
        else:
            if train_paths is None:
                raise DataError(f"{what} has path,index rows, which need an image-folder --data_dir")
            where = _match_paths([r[0] for r in rows], train_paths, what)
            if len(np.unique(where)) != len(where) or len(where) != num_train:
                raise DataError(f"{what} must name each of the {num_train} training images exactly once "
                                f"(it has {len(where)} rows for {len(np.unique(where))} images)")
            index = np.empty(num_train, dtype=np.int64)
            index[where] = values
    if len(index) != num_train:
        raise DataError(f"{what} has {len(index)} entries but the training set has {num_train} images; "
                        f"give one index per training image")
    bad = (index < 0) | (index >= num_entries)
    if bad.any():
        raise DataError(f"{what} has {int(bad.sum())} indices outside 0..{num_entries - 1}, the entries of the "
                        f"label file (first: {index[bad][0]})")
    if len(np.unique(index)) != len(index):
        dup = int(np.flatnonzero(np.bincount(index) > 1)[0])
        raise DataError(f"{what} maps several training images to entry {dup}; each image has its own entry")
    return index


# ---------------------------------------------------------------------------- gold lists
def read_gold_list(path: str | Path, num_train: int, train_paths: Sequence[str] | None = None) -> np.ndarray:
    """Sorted, distinct training-set indices of trusted images, from ``.npy`` or text (one index
    per line, optional header; first column of a CSV), or image paths for an image folder."""
    path = Path(path)
    what = f"gold list {path}"
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path} as a .npy array ({exc})") from None
        index = np.asarray(a).reshape(-1)
        if index.dtype.kind == "f" and np.all(index == np.round(index)):
            index = index.astype(np.int64)
    else:
        values = [r[0] for r in _read_rows(path)]
        if len(values) > 1 and not _is_int(values[0]) and _is_int(values[1]):
            values = values[1:]  # a header
        if all(_is_int(v) for v in values):
            index = np.array([int(v) for v in values], dtype=np.int64)
        elif train_paths is not None:
            if values and values[0].lower() in ("path", "file", "filename", "image"):
                values = values[1:]
            index = _match_paths(values, train_paths, what)
        else:
            bad = next(v for v in values if not _is_int(v))
            raise DataError(f"{what} has a non-integer entry {bad!r}; list training-set indices (0-based, "
                            f"dataset order), one per line")
    return check_gold(index, num_train, what)


def check_gold(index, num_train: int, what: str = "the gold list") -> np.ndarray:
    """Sorted trusted training indices, or a one-line DataError (empty, out of range, repeated, all)."""
    index = np.asarray(index).reshape(-1)
    if index.dtype.kind == "b":
        if len(index) != num_train:
            raise DataError(f"{what} is a boolean mask of length {len(index)}, but the training set has "
                            f"{num_train} images")
        index = np.flatnonzero(index)
    elif len(index) and index.dtype.kind not in "iu":
        raise DataError(f"{what} must hold integer training-set indices, got {index.dtype} values")
    index = index.astype(np.int64)
    if len(index) == 0:
        raise DataError(f"{what} is empty; list at least one trusted training image")
    outside = (index < 0) | (index >= num_train)
    if outside.all():
        raise DataError(f"{what} overlaps no training image: its indices run {index.min()}..{index.max()} but "
                        f"the training set has indices 0..{num_train - 1}")
    if outside.any():
        raise DataError(f"{what} has {int(outside.sum())} indices outside 0..{num_train - 1} "
                        f"(first: {index[outside][0]}); indices count training images from 0 in dataset order")
    gold = np.unique(index)
    if len(gold) != len(index):
        dup = int(np.flatnonzero(np.bincount(index) > 1)[0])
        raise DataError(f"{what} lists index {dup} more than once; list each trusted image once")
    if len(gold) == num_train:
        raise DataError(f"{what} covers all {num_train} training images, leaving none to correct; "
                        f"list only the trusted ones")
    return gold


def split_trusted(given: np.ndarray, clean: np.ndarray, num_classes: int, gold_fraction: float,
                  seed: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced gold indices drawn only among trusted images (``given == clean``), and the
    remaining silver indices (both sorted); ``gold_fraction`` counts against the whole training set.
    ``exclude`` (held-out validation images) is in neither."""
    per_class = gold_per_class(gold_fraction, len(given), num_classes)
    rng = np.random.default_rng([seed, 0])
    trusted = given == clean
    if exclude is not None:
        trusted = trusted.copy()
        trusted[exclude] = False
    gold = []
    for c in range(num_classes):
        members = np.flatnonzero(trusted & (clean == c))
        if len(members) < per_class:
            raise DataError(f"class {c} has only {len(members)} training images whose given label is trusted "
                            f"(equal to the clean label), fewer than the {per_class} per class that "
                            f"--gold_fraction {gold_fraction:g} asks for"
                            f"{' after the validation images' if exclude is not None else ''}; lower --gold_fraction"
                            f"{' or --val_fraction' if exclude is not None else ''} or give --gold_indices")
        gold.append(rng.choice(members, size=per_class, replace=False))
    gold = np.sort(np.concatenate(gold))
    return gold, np.setdiff1d(np.arange(len(given)), gold if exclude is None else np.union1d(gold, exclude))
