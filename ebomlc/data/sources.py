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

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm""".split())
CLASS_NAMES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}  # digits: the numbers are the names

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
    class_names: tuple[str, ...] | None = None  # name of each class number (None: unnamed)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


BUILTIN = ("digits", "cifar10", "cifar100")
FOLDER_LAYOUT = "train/<class>/* and test/<class>/* (one folder per class)"


def load_dataset(name: str, data_dir: str | None = None, download: bool = False,
                 verify_md5: bool = True, image_size: int | None = None) -> RawDataset:
    """Load ``digits``, ``cifar10`` / ``cifar100`` (pickles or an image-folder tree) or any other
    name as an image folder (``--dataset folder --data_dir DIR`` resolves to DIR's own name)."""
    if name == "digits":
        if image_size is not None:
            raise DataError("--image_size resizes image folders; digits are 8x8 and built in")
        return load_digits()
    root = Path(data_dir if data_dir is not None else os.path.join("data", name)).expanduser()
    if name not in CIFAR_PICKLES:
        if not root.is_dir():
            raise DataError(f"no dataset {name!r}: it is not built in ({', '.join(BUILTIN)}) and {str(root)!r} is "
                            f"not a folder; pass --dataset folder --data_dir DIR with {FOLDER_LAYOUT}")
        return load_image_folder(name, root, image_size=image_size)
    if download:
        _download_with_torchvision(name, root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return load_image_folder(name, root, image_size=image_size)
    for base in (root, root.parent):
        if (base / CIFAR_PICKLES[name]["folder"]).is_dir():
            if image_size is not None and image_size != 32:
                raise DataError(f"--image_size resizes image folders; the {name} pickles are 32x32")
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
    """CIFAR with its published statistics; the random crop pads by side/8 (SPEC.md's 4 at 32 px, 1 at 8 px)."""
    k = CIFAR_PICKLES[name]["num_classes"]
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{name} {split} labels must lie in [0, {k - 1}], found {y.min()}..{y.max()}")
    return RawDataset(name, x_train, y_train, x_test, y_test, k,
                      mean=CIFAR_MEAN[name], std=CIFAR_STD[name], pad=max(1, round(x_train.shape[-1] / 8)),
                      flip=True, train_paths=train_paths,
                      class_names=CLASS_NAMES[name])


def _list_images(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, cls in enumerate(classes):
        files += [(p, label) for p in sorted((root / split / cls).iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise DataError(f"no images found under {root / split} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def folder_classes(root: Path) -> list[str]:
    """The class names of an image-folder tree (sorted sub-folders of ``train/``), or a one-line
    DataError when ``root`` lacks ``train/``, ``test/`` or the same classes in both."""
    if not (root / "train").is_dir():
        raise DataError(f"{str(root)!r} has no train/ folder; an image folder needs {FOLDER_LAYOUT}")
    if not (root / "test").is_dir():
        raise DataError(f"{str(root)!r} has no test/ folder; an image folder needs {FOLDER_LAYOUT} "
                        f"(move some labelled images of each class into test/<class>/)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    test = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root / 'train'} has {len(classes)} class folder(s); give at least 2 (train/<class>/*)")
    if test != classes:
        only_train, only_test = sorted(set(classes) - set(test)), sorted(set(test) - set(classes))
        detail = "; ".join(s for s in (f"only in train/: {', '.join(only_train)}" if only_train else "",
                                       f"only in test/: {', '.join(only_test)}" if only_test else "") if s)
        raise DataError(f"train/ and test/ of {str(root)!r} have different class folders ({detail}); "
                        f"give both the same classes")
    return classes


def load_image_folder(name: str, root: str | Path, cache: bool = True, image_size: int | None = None) -> RawDataset:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*`` (classes in sorted order, files
    sorted by name within a class; ``train_paths`` records that order).

    Images are grayscale (one channel) when every image has equal R, G and B, else RGB; they are
    resized to ``image_size`` squares when given, or when their sizes differ to the most common
    side. CIFAR names keep CIFAR's published statistics and flips; every folder is padded by a side/8
    crop (CIFAR's 4 pixels at 32); any other folder is
    normalised with its training images' per-channel mean and std and
    flipped when in colour. Decoded arrays and statistics are cached in ``~/.cache/ebomlc`` keyed
    by the file list, so a study decodes the images once.
    """
    root = Path(root)
    classes = folder_classes(root)
    k = CIFAR_PICKLES[name]["num_classes"] if name in CIFAR_PICKLES else None
    if k is not None and len(classes) != k:
        raise DataError(f"{root / 'train'} has {len(classes)} class folders, {name} needs {k}; for another set of "
                        f"classes use --dataset folder")
    train, test = _list_images(root, "train", classes), _list_images(root, "test", classes)
    x_train, y_train, x_test, y_test, mean, std = _decode_cached(train, test, image_size, cache)
    paths = tuple(str(p.resolve()) for p, _ in train)
    if k is not None:
        return _cifar_raw(name, x_train, y_train, x_test, y_test, train_paths=paths)
    side = x_train.shape[-1]
    return RawDataset(name, x_train, y_train, x_test, y_test, len(classes), mean=mean, std=std,
                      pad=max(1, round(side / 8)), flip=x_train.shape[1] == 3, train_paths=paths,
                      class_names=tuple(classes))


def _cache_file(train: list[tuple[Path, int]], test: list[tuple[Path, int]], image_size: int | None) -> Path:
    lines = [f"v3 size={image_size}"]
    for split, files in (("train", train), ("test", test)):
        for p, y in files:
            st = p.stat()
            lines.append(f"{split}:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}:{y}")
    key = hashlib.sha1("\n".join(lines).encode()).hexdigest()
    return Path(os.environ.get("EBOMLC_CACHE", Path.home() / ".cache" / "ebomlc")) / f"folder-{key}.npz"


def _decode_cached(train: list[tuple[Path, int]], test: list[tuple[Path, int]], image_size: int | None,
                   cache: bool) -> tuple[np.ndarray, ...]:
    """``x_train, y_train, x_test, y_test, mean, std`` of the image files, from the cache when there."""
    cache_file = _cache_file(train, test, image_size)
    if cache and cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                return (z["x_train"], z["y_train"], z["x_test"], z["y_test"], tuple(z["mean"].tolist()),
                        tuple(z["std"].tolist()))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache: decode again
    images = decode_images([p for p, _ in train + test])
    x = _to_array(images, image_size)
    n = len(train)
    mean, std = channel_stats(x[:n])
    y_train = np.array([y for _, y in train], dtype=np.int64)
    y_test = np.array([y for _, y in test], dtype=np.int64)
    out = (x[:n], y_train, x[n:], y_test, mean, std)
    if cache:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, x_train=out[0], y_train=y_train, x_test=out[2], y_test=y_test, mean=np.array(mean),
                     std=np.array(std))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home is fine: decode again next time
    return out


def _decode_one(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read image {path}: {reason}; fix or remove the file") from None


def decode_images(paths: list[Path], stream=None, report_from: int = 5000) -> list:
    """Decoded RGB PIL images of ``paths`` in order; a line of progress per tenth on ``stream``
    (stderr) from ``report_from`` images on. Files of 16 KB and more on average are decoded by a thread
    pool (PIL decodes them without the GIL: 1.7x on 2 cores for 256 px JPEGs); smaller ones serially,
    where threads only contend (CIFAR-size JPEGs decode 2x slower on a pool)."""
    import concurrent.futures as cf
    import sys

    stream = stream or sys.stderr
    big = len(paths) > 1 and sum(p.stat().st_size for p in paths[:200]) / min(len(paths), 200) >= 16384
    workers = min(8, os.cpu_count() or 1) if big else 1
    show = len(paths) >= report_from
    if show:
        how = f"with {workers} threads" if workers > 1 else "serially"
        stream.write(f"decoding {len(paths)} images {how} (once; cached afterwards)\n")
    out, step = [], max(1, len(paths) // 10)
    with cf.ThreadPoolExecutor(workers) as pool:
        images = pool.map(_decode_one, paths) if workers > 1 else map(_decode_one, paths)
        for i, image in enumerate(images, 1):
            out.append(image)
            if show and (i % step == 0 or i == len(paths)):
                stream.write(f"  decoded {i}/{len(paths)}\n")
                stream.flush()
    return out


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8 [N, C, H, W]`` images scaled to [0, 1], in blocks of ``chunk``
    images (no float copy of the whole set)."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        block = x[i:i + chunk].astype(np.float64)
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
    n = max(len(x) * x.shape[2] * x.shape[3], 1)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    return tuple(float(m / 255) for m in mean), tuple(float(max(s / 255, 1e-3)) for s in std)


def _to_array(images: list, image_size: int | None) -> np.ndarray:
    """``uint8 [N, C, S, S]`` of RGB images: C = 1 when every image is gray (R = G = B); resized to
    ``image_size`` (default: kept when all images are the same square, else the most common longer side)."""
    from collections import Counter

    from PIL import Image

    sizes = {im.size for im in images}
    if image_size is None and (len(sizes) > 1 or any(w != h for w, h in sizes)):
        image_size = Counter(max(im.size) for im in images).most_common(1)[0][0]
    if image_size is not None:
        images = [im if im.size == (image_size, image_size) else im.resize((image_size, image_size), Image.BILINEAR)
                  for im in images]
    x = np.stack([np.asarray(im, dtype=np.uint8) for im in images]).transpose(0, 3, 1, 2)
    if (x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all():
        x = x[:, :1]
    return np.ascontiguousarray(x)


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
