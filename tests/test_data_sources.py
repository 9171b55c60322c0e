import pickle

import numpy as np
import pytest
import torch

from ebomlc.data.augment import normalize, random_crop_flip
from ebomlc.data.sources import load_cifar_pickles, load_dataset, load_image_folder
from ebomlc.errors import DataError


def _write_batch(path, n, k, label_key, rng):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, k, n).tolist()
    with open(path, "wb") as f:
        pickle.dump({b"data": data, label_key: labels, b"batch_label": b"x"}, f)
    return data, labels


def test_cifar10_pickle_reader(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = [_write_batch(folder / f"data_batch_{i}", 6, 10, b"labels", rng) for i in range(1, 6)]
    test_data, test_labels = _write_batch(folder / "test_batch", 4, 10, b"labels", rng)
    raw = load_cifar_pickles("cifar10", tmp_path, verify_md5=False)
    assert raw.x_train.shape == (30, 3, 32, 32) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train[0], written[0][0][0].reshape(3, 32, 32))
    np.testing.assert_array_equal(raw.y_train[6:12], written[1][1])
    np.testing.assert_array_equal(raw.y_test, test_labels)
    assert raw.num_classes == 10 and raw.pad == 4 and raw.flip


def test_cifar100_pickle_reader_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _, train_labels = _write_batch(folder / "train", 8, 100, b"fine_labels", rng)
    _write_batch(folder / "test", 3, 100, b"fine_labels", rng)
    raw = load_dataset("cifar100", str(tmp_path), verify_md5=False)
    assert raw.num_classes == 100
    np.testing.assert_array_equal(raw.y_train, train_labels)


def test_md5_mismatch_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", 2, 10, b"labels", rng)
    _write_batch(folder / "test_batch", 2, 10, b"labels", rng)
    with pytest.raises(DataError, match="corrupt .md5 mismatch"):
        load_dataset("cifar10", str(tmp_path))


def test_missing_and_garbage_data(tmp_path):
    with pytest.raises(DataError, match="no cifar10 data found"):
        load_dataset("cifar10", str(tmp_path / "nope"))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with pytest.raises(DataError, match="missing"):
        load_cifar_pickles("cifar10", tmp_path, verify_md5=False)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR pickle"):
        load_cifar_pickles("cifar10", tmp_path, verify_md5=False)


def test_image_folder_reader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    expected = {}
    for split in ("train", "test"):
        for c in range(10):
            d = tmp_path / split / f"class{c:02d}"
            d.mkdir(parents=True)
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(d / "0001.png")
            expected[(split, c)] = img
    raw = load_image_folder("cifar10", tmp_path, cache=False)
    assert raw.x_train.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(raw.y_train, np.arange(10))
    np.testing.assert_array_equal(raw.x_test[3], expected[("test", 3)].transpose(2, 0, 1))
    assert raw.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    (tmp_path / "train" / "extra").mkdir()
    with pytest.raises(DataError, match=r"different class folders \(only in train/: extra\)"):
        load_image_folder("cifar10", tmp_path, cache=False)
    (tmp_path / "test" / "extra").mkdir()
    with pytest.raises(DataError, match="11 class folders, cifar10 needs 10"):
        load_image_folder("cifar10", tmp_path, cache=False)


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, pad=2, flip=False, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(16):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_about_half():
    x = torch.arange(4 * 8, dtype=torch.uint8).reshape(1, 1, 4, 8).repeat(400, 1, 1, 1)
    out = random_crop_flip(x, pad=0, flip=True, generator=torch.Generator().manual_seed(1))
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((mirrored | same).all())
    assert 150 < int(mirrored.sum()) < 250


def test_normalize():
    x = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.5, 1.0]))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
