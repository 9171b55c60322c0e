"""Raw datasets as uint8 arrays: the built-in ``digits``, CIFAR pickles and image folders.

Every loader returns a :class:`RawDataset`: ``x`` is ``uint8 [N, C, H, W]``, ``y`` is ``int64 [N]``,
train and test kept apart, test labels clean. Nothing here knows about noise or splits.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}

CIFAR_PICKLES = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "label_key": b"labels",
        "train": [("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                  ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                  ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                  ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                  ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")],
        "test": [("test_batch", "40351d587109b95175f43aff81a1287e")],
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "label_key": b"fine_labels",
        "train": [("train", "16019d7e3df5f24257cddd939b257f8d")],
        "test": [("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")],
        "num_classes": 100,
    },
}

HOW_TO_GET = {
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
               "unpack it into --data_dir, pass --download, or point --data_dir at a train/ test/ "
               "class-per-folder image tree",
    "cifar100": "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
                "unpack it into --data_dir, pass --download, or point --data_dir at a train/ test/ "
                "class-per-folder image tree",
}

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True)
class RawDataset:
    """Clean images and labels of one dataset, train and test."""

    name: str
    x_train: np.ndarray  # uint8 [N, C, H, W]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int  # reflect padding of the random crop
    flip: bool  # horizontal flips in augmentation
    train_paths: tuple[str, ...] | None = None  # image files of x_train, in order (image folders only)


def load_dataset(name: str, data_dir: str | None = None, download: bool = False,
                 verify_md5: bool = True) -> RawDataset:
    """Load ``digits``, ``cifar10`` or ``cifar100`` (pickles or an image-folder tree)."""
    if name == "digits":
        return load_digits()
    if name not in CIFAR_PICKLES:
        raise DataError(f"unknown dataset {name!r}; choose one of: digits, cifar10, cifar100")
    if data_dir is None:
        data_dir = os.path.join("data", name)
    root = Path(data_dir).expanduser()
    if download:
        _download_with_torchvision(name, root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return load_image_folder(name, root)
    for base in (root, root.parent):
        if (base / CIFAR_PICKLES[name]["folder"]).is_dir():
            return load_cifar_pickles(name, base, verify_md5=verify_md5)
    raise DataError(f"no {name} data found in {str(root)!r}: {HOW_TO_GET[name]}")


def load_digits() -> RawDataset:
    """scikit-learn's 1,797 8x8 digits (shipped in the wheel), split 1,437 train / 360 test.

    The split is fixed (seeded with 0), like CIFAR's official test set: it never depends on the
    run's seed. Pixel values 0..16 are scaled to 0..255.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:360], order[360:]
    xf = x[train].astype(np.float64) / 255.0
    return RawDataset("digits", x[train], y[train], x[test], y[test], 10,
                      mean=(float(xf.mean()),), std=(float(xf.std()),), pad=1, flip=False)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_pickle_batches(name: str, folder: Path, files: list[tuple[str, str]],
                         verify_md5: bool) -> tuple[np.ndarray, np.ndarray]:
    spec = CIFAR_PICKLES[name]
    xs, ys = [], []
    for filename, md5 in files:
        path = folder / filename
        if not path.is_file():
            raise DataError(f"missing {path}: {HOW_TO_GET[name]}")
        if verify_md5 and _md5(path) != md5:
            raise DataError(f"{path} is corrupt (md5 mismatch): delete it and {HOW_TO_GET[name]}")
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="bytes")
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            labels = np.asarray(entry[spec["label_key"]], dtype=np.int64)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
            raise DataError(f"{path} is not a CIFAR pickle ({type(exc).__name__}): {HOW_TO_GET[name]}") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(f"{path} has shape {data.shape}, expected [N, 3072] with N labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar_pickles(name: str, root: str | Path, verify_md5: bool = True) -> RawDataset:
    """Read the official python-pickle layout (``cifar-10-batches-py/`` or ``cifar-100-python/``)."""
    spec = CIFAR_PICKLES[name]
    folder = Path(root) / spec["folder"]
    x_train, y_train = _read_pickle_batches(name, folder, spec["train"], verify_md5)
    x_test, y_test = _read_pickle_batches(name, folder, spec["test"], verify_md5)
    return _cifar_raw(name, x_train, y_train, x_test, y_test)


def _cifar_raw(name: str, x_train, y_train, x_test, y_test, train_paths=None) -> RawDataset:
    k = CIFAR_PICKLES[name]["num_classes"]
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{name} {split} labels must lie in [0, {k - 1}], found {y.min()}..{y.max()}")
    return RawDataset(name, x_train, y_train, x_test, y_test, k,
                      mean=CIFAR_MEAN[name], std=CIFAR_STD[name], pad=4, flip=True, train_paths=train_paths)


def load_image_folder(name: str, root: str | Path, cache: bool = True) -> RawDataset:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*`` (classes in sorted order, files
    sorted by name within a class; ``train_paths`` records that order).

    Decoded arrays are cached in ``~/.cache/ebomlc`` keyed by the file list, so a study decodes
    the JPEGs once.
    """
    root = Path(root)
    k = CIFAR_PICKLES[name]["num_classes"] if name in CIFAR_PICKLES else None
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if k is not None and len(classes) != k:
        raise DataError(f"{root / 'train'} has {len(classes)} class folders, {name} needs {k}")
    splits, train_paths = {}, None
    for split in ("train", "test"):
        files = []
        for label, cls in enumerate(classes):
            folder = root / split / cls
            if not folder.is_dir():
                raise DataError(f"missing class folder {folder}")
            files += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(f"no images found under {root / split}")
        splits[split] = _decode_cached(files, cache)
        if split == "train":
            train_paths = tuple(str(p.resolve()) for p, _ in files)
    return _cifar_raw(name, *splits["train"], *splits["test"], train_paths=train_paths)


def _decode_cached(files: list[tuple[Path, int]], cache: bool) -> tuple[np.ndarray, np.ndarray]:
    key = hashlib.sha1("\n".join(f"{p.resolve()}:{p.stat().st_size}:{y}" for p, y in files).encode()).hexdigest()
    cache_file = Path(os.environ.get("EBOMLC_CACHE", Path.home() / ".cache" / "ebomlc")) / f"images-{key}.npz"
    if cache and cache_file.is_file():
        with np.load(cache_file) as z:
            return z["x"], z["y"]
    from PIL import Image

    x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1) for p, _ in files])
    y = np.array([label for _, label in files], dtype=np.int64)
    if cache:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, x=x, y=y)
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home is fine: decode again next time
    return x, y


def _download_with_torchvision(name: str, root: Path) -> None:
    try:
        import torchvision  # noqa: F401  (lazy: only needed for --download)
        from torchvision.datasets import CIFAR10, CIFAR100
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"--download needs a working torchvision ({exc.__class__.__name__}: {exc}); "
                        f"or {HOW_TO_GET[name]}") from None
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"downloading {name} into {root} failed ({exc}); {HOW_TO_GET[name]}") from None
