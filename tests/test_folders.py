"""Any image folder as a dataset (``--dataset folder``), CIFAR-N labels mapped onto a folder, and the
bad inputs of both: one line, exit 2, nothing written."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ebomlc.cli import main
from ebomlc.config import TrainConfig
from ebomlc.data.sources import CIFAR10_CLASSES, decode_images, load_dataset, load_image_folder
from ebomlc.errors import DataError
from ebomlc.models import ResNet18, build_main_model, model_for
from ebomlc.train import Trainer, load_data

SHAPES = ("circle", "square", "triangle")


def write_folder(root: Path, classes, n_train: int, n_test: int, size=(28, 28), mode: str = "L",
                 seed: int = 0, sizes=None) -> Path:
    """``root/train/<class>/NNN.png`` and ``root/test/...``: noise plus a bright band whose row says the class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)] if sizes else size
                img = rng.integers(0, 60, (h, w) if mode == "L" else (h, w, 3)).astype(np.uint8)
                band = h // len(classes)
                img[c * band:(c + 1) * band] += 150
                Image.fromarray(img, mode).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def gray3(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "gray3", SHAPES, 30, 8)


def test_a_grayscale_folder_trains_evaluates_and_names_its_classes(gray3, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data_dir", str(gray3), "--method", "ebomlc", "--model",
                 "small_cnn", "--epochs", "2", "--gold_fraction", "0.1", "--bs", "10", "--device", "cpu",
                 "--threads", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ebomlc on gray3 (3 classes, 1x28x28, model SmallCNN): 81 silver, 9 gold, 24 test images" in err
    assert "realised" in err and "on silver" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "gray3" and summary["class_names"] == list(SHAPES)
    assert summary["n_test"] == 24 and 0.0 <= summary["final_test_acc"] <= 1.0
    assert json.loads((out / "config.json").read_text())["dataset"] == "gray3"
    assert main(["correct", str(out), "--device", "cpu"]) == 0
    table = pd.read_csv(out / "corrected_labels.csv")
    assert {"given_class", "corrected_class"} <= set(table.columns) and len(table) == 81
    assert set(table["given_class"]) <= set(SHAPES)
    assert (table["given_class"] == [SHAPES[i] for i in table["given_label"]]).all()
    assert (table["corrected_class"] == [SHAPES[i] for i in table["corrected_label"]]).all()
    assert table["path"].str.contains("/train/").all()


def test_any_name_with_a_data_dir_is_that_folder(gray3):
    config = TrainConfig(dataset="shapes", data_dir=str(gray3), method="ce").resolved()
    assert config.dataset == "shapes"
    assert TrainConfig(dataset="folder", data_dir=str(gray3) + "/").resolved().dataset == "gray3"
    raw = load_dataset("shapes", str(gray3))
    assert raw.name == "shapes" and raw.class_names == SHAPES and raw.x_train.shape == (90, 1, 28, 28)
    assert raw.pad == 4 and not raw.flip  # side / 8; grayscale is not flipped
    x = raw.x_train.astype(np.float64) / 255
    assert raw.mean == pytest.approx((x.mean(),)) and raw.std == pytest.approx((x.std(),))


def test_colour_images_of_several_sizes_are_resized(tmp_path):
    root = write_folder(tmp_path / "col", ("a", "b"), 5, 2, mode="RGB", sizes=[(24, 24), (20, 16), (24, 24)])
    raw = load_image_folder("col", root, cache=False)
    assert raw.x_train.shape == (10, 3, 24, 24) and raw.flip and raw.pad == 3  # the most common side
    assert raw.x_test.shape == (4, 3, 24, 24)
    small = load_image_folder("col", root, cache=False, image_size=12)
    assert small.x_train.shape == (10, 3, 12, 12) and small.pad == 2
    x = small.x_train.astype(np.float64) / 255
    assert small.mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))))


def test_decoded_folders_are_cached_with_their_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("EBOMLC_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "c3", SHAPES, 4, 2, size=(10, 10))
    first = load_image_folder("c3", root)
    assert len(list((tmp_path / "cache").glob("folder-*.npz"))) == 1
    import ebomlc.data.sources as sources

    monkeypatch.setattr(sources, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    again = load_image_folder("c3", root)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert first.mean == again.mean and first.std == again.std and again.class_names == SHAPES


def test_decoding_reports_progress(tmp_path):
    root = write_folder(tmp_path / "p", ("a", "b"), 10, 1, size=(8, 8))
    stream = io.StringIO()
    images = decode_images(sorted(root.glob("train/*/*.png")), stream=stream, report_from=5)
    lines = stream.getvalue().splitlines()
    assert len(images) == 20 and lines[0].startswith("decoding 20 images") and lines[-1] == "  decoded 20/20"


def test_the_model_follows_the_image_size():
    assert [model_for(s) for s in (8, 16, 28, 32, 48, 64, 224)] == ["small_cnn"] * 2 + ["resnet32"] * 3 + \
        ["resnet18"] * 2
    for side, pooled in ((64, 8), (96, 6), (160, 5)):
        model = build_main_model("auto", 5, 3, side)
        assert isinstance(model, ResNet18) and model.feature_dim == 512
        logits, feature = model(torch.randn(2, 3, side, side))
        assert logits.shape == (2, 5) and feature.shape == (2, 512)
    assert type(build_main_model("small_cnn", 3, 1, 64)).__name__ == "SmallCNN"


def test_a_large_image_folder_runs_a_meta_step_on_resnet18(tmp_path):
    root = write_folder(tmp_path / "big", ("a", "b"), 6, 2, size=(64, 64), mode="RGB")
    config = TrainConfig(method="ebomlc", dataset="folder", data_dir=str(root), gold_fraction=0.35, bs=4, epochs=1,
                         max_steps_per_epoch=1, device="cpu", corruption_level=0.5)
    trainer = Trainer(config)
    assert isinstance(trainer.model, ResNet18)
    before = [p.detach().clone() for p in trainer.meta.parameters()]
    row = trainer.run_epoch()
    assert np.isfinite(row["upper_loss"]) and 0.0 <= row["test_acc"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.meta.parameters()))


# ---------------------------------------------------------------------------- CIFAR-N onto a folder
def cifar_n_folder(tmp_path: Path) -> tuple[Path, dict, np.ndarray]:
    """A 10-class CIFAR-10-named folder (2 train images per class) and a 40-entry CIFAR-N file whose
    entries ``index[i]`` belong to training image i (the rest are other images)."""
    root = write_folder(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, 2, 1, size=(32, 32), mode="RGB")
    rng = np.random.default_rng(5)
    clean = rng.integers(0, 10, 40)
    index = rng.permutation(40)[:20]
    clean[index] = np.repeat(np.arange(10), 2)  # training image i (class i // 2) sits at entry index[i]
    flip = rng.random(40) < 0.5
    flip[index[::2]] = False  # the first image of each class keeps its label: a trusted gold candidate
    worse = np.where(flip, (clean + 1) % 10, clean)
    d = {"clean_label": clean, "worse_label": worse, "aggre_label": clean.copy()}
    torch.save(d, tmp_path / "CIFAR-10_human.pt")
    return root, d, index


def test_cifar_n_labels_through_an_index_map(tmp_path):
    root, d, index = cifar_n_folder(tmp_path)
    raw = load_dataset("cifar10", str(root))
    rows = [f"{Path(p).parent.name}/{Path(p).name},{i}" for p, i in zip(raw.train_paths, index)]
    (tmp_path / "map.csv").write_text("path,index\n" + "\n".join(reversed(rows)) + "\n")  # any order
    np.save(tmp_path / "map.npy", index)
    for index_file in ("map.csv", "map.npy"):
        config = TrainConfig(dataset="cifar10", data_dir=str(root), noise_file=str(tmp_path / "CIFAR-10_human.pt"),
                             noise_key="worse_label", noise_index=str(tmp_path / index_file), gold_fraction=0.5)
        data = load_data(config.resolved(), torch.device("cpu"))
        given = np.empty(20, dtype=np.int64)
        given[data.silver_index] = data.silver_noisy.numpy()
        np.testing.assert_array_equal(given[data.silver_index], d["worse_label"][index][data.silver_index])
        summary = data.summary()
        assert summary["file_noise_rate"] == pytest.approx(float((d["worse_label"] != d["clean_label"]).mean()))
        expected = float((d["worse_label"][index][data.silver_index] != d["clean_label"][index][data.silver_index]).mean())
        assert summary["realised_noise_rate"] == pytest.approx(expected)
    np.save(tmp_path / "shifted.npy", np.roll(index, 1))
    shifted = TrainConfig(dataset="cifar10", data_dir=str(root), noise_file=str(tmp_path / "CIFAR-10_human.pt"),
                          noise_key="worse_label", noise_index=str(tmp_path / "shifted.npy"), gold_fraction=0.5)
    with pytest.raises(DataError, match="disagree with cifar10's training labels .* index map"):
        load_data(shifted.resolved(), torch.device("cpu"))


# ---------------------------------------------------------------------------- bad input
def _truncated(tmp_path: Path) -> list[str]:
    root = write_folder(tmp_path / "broken", ("a", "b"), 3, 1, size=(12, 12))
    bad = root / "train" / "b" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    return ["--dataset", "folder", "--data_dir", str(root)]


def _no_test(tmp_path: Path) -> list[str]:
    root = write_folder(tmp_path / "notest", ("a", "b"), 3, 1, size=(12, 12))
    import shutil

    shutil.rmtree(root / "test")
    return ["--dataset", "folder", "--data_dir", str(root)]


def _other_test_classes(tmp_path: Path) -> list[str]:
    root = write_folder(tmp_path / "other", ("a", "b"), 3, 1, size=(12, 12))
    (root / "test" / "b").rename(root / "test" / "c")
    return ["--dataset", "folder", "--data_dir", str(root)]


def _asym_on_a_folder(tmp_path: Path) -> list[str]:
    root = write_folder(tmp_path / "asym", ("a", "b"), 3, 1, size=(12, 12))
    return ["--dataset", "folder", "--data_dir", str(root), "--corruption_type", "asym"]


@pytest.mark.parametrize("make, message", [
    (lambda t: ["--dataset", "gray3"], "no dataset 'gray3': it is not built in"),
    (lambda t: ["--dataset", "folder"], "--dataset folder needs --data_dir DIR"),
    (lambda t: ["--dataset", "digits", "--data_dir", str(t)], "--dataset digits is built in and reads no --data_dir"),
    (lambda t: ["--dataset", "data/gray3"], "--dataset takes a name, not a path"),
    (_truncated, r"cannot read image .*/train/b/001.png"),
    (_no_test, "has no test/ folder"),
    (_other_test_classes, r"different class folders \(only in train/: b; only in test/: c\)"),
    (_asym_on_a_folder, "asym noise has class pairs for cifar10, cifar100 and digits only"),
    (lambda t: ["--dataset", "digits", "--noise_index", str(t / "x.npy")], "--noise_index maps training images"),
])
def test_bad_folder_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, make, message):
    import re

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.arange(3))
    args = make(tmp_path)
    assert main(["train", *args, "--epochs", "1", "--max_steps_per_epoch", "1", "--gold_fraction", "0.34",
                 "--device", "cpu", "--runid", "r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "runs").exists()


def test_worked_example_labels_csv_trusted_list_train_correct(gray3, tmp_path, capsys):
    """docs/data.md's worked example: path,label CSV with wrong labels, a trusted list of paths,
    `ebomlc train`, `ebomlc correct`."""
    files = sorted(p.relative_to(gray3 / "train").as_posix() for p in (gray3 / "train").glob("*/*.png"))
    rng = np.random.default_rng(3)
    true = np.array([SHAPES.index(f.split("/")[0]) for f in files])
    given = np.where(rng.random(len(files)) < 0.3, (true + 1) % 3, true)
    given[::10] = true[::10]  # the trusted images are labelled right
    rows = [f"{f},{g}" for f, g in zip(files, given)]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rng.permutation(rows)) + "\n")
    (tmp_path / "trusted.txt").write_text("\n".join(files[::10]) + "\n")
    out = tmp_path / "runs" / "shapes"
    assert main(["train", "--dataset", "folder", "--data_dir", str(gray3), "--method", "ebomlc", "--noisy_labels",
                 str(tmp_path / "labels.csv"), "--gold_indices", str(tmp_path / "trusted.txt"), "--epochs", "2",
                 "--bs", "10", "--model", "small_cnn", "--device", "cpu", "--out", str(out)]) == 0
    assert "labels from" in capsys.readouterr().err
    assert main(["correct", str(out), "--out", str(tmp_path / "corrected.csv")]) == 0
    table = pd.read_csv(tmp_path / "corrected.csv")
    assert len(table) == len(files) - 9 and not set(table["path"]) & {str((gray3 / "train" / f).resolve())
                                                                        for f in files[::10]}
    by_path = dict(zip(files, given))
    assert [by_path[Path(p).parent.name + "/" + Path(p).name] for p in table["path"]] == table["given_label"].tolist()
    assert set(table["given_class"]) <= set(SHAPES)


def test_an_image_edited_in_place_is_decoded_again(tmp_path, monkeypatch):
    import os

    from PIL import Image

    monkeypatch.setenv("EBOMLC_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "bmp"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(root / split / c / "0.bmp")
    first = load_image_folder("bmp", root)
    target = root / "train" / "a" / "0.bmp"
    size = target.stat().st_size
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(target)
    assert target.stat().st_size == size  # same size: only the modification time tells
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = load_image_folder("bmp", root)
    assert first.x_train[0].max() == 200 and again.x_train[0].max() == 0


def test_a_resized_cifar_folder_pads_its_crop_by_side_over_8(tmp_path):
    """``--dataset cifar10 --image_size 8``: CIFAR's statistics and flips, a 1-pixel pad (4 would shift an
    8-pixel image by half its side), the same pad as the folder read as ``--dataset folder``."""
    from ebomlc.data.sources import CIFAR10_CLASSES, CIFAR_MEAN

    root = write_folder(tmp_path / "c10", CIFAR10_CLASSES, 2, 1, size=(32, 32), mode="RGB")
    full = load_dataset("cifar10", str(root))
    small = load_dataset("cifar10", str(root), image_size=8)
    assert full.pad == 4 and small.pad == 1 and small.flip and small.mean == CIFAR_MEAN["cifar10"]
    assert small.pad == load_image_folder("anyname", root, image_size=8).pad
