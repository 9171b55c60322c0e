"""Labels from files (own noisy labels, gold lists, CIFAR-N), corrected-label export and the API."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ebomlc import TrainConfig
from ebomlc.cli import main
from ebomlc.data import build_noisy_data, given_labels
from ebomlc.data.labels import read_gold_list, read_label_file, read_noise_file
from ebomlc.errors import ConfigError, DataError
from ebomlc.train import data_key, load_data, train_run

from .tiny import FAST


# ---------------------------------------------------------------------------- readers
def test_label_file_formats(tmp_path):
    labels = np.array([0, 2, 1, 2, 0])
    np.save(tmp_path / "a.npy", labels)
    np.testing.assert_array_equal(read_label_file(tmp_path / "a.npy", 5, 3), labels)
    (tmp_path / "b.csv").write_text("label\n" + "\n".join(map(str, labels)) + "\n")
    np.testing.assert_array_equal(read_label_file(tmp_path / "b.csv", 5, 3), labels)
    (tmp_path / "c.csv").write_text("\n".join(map(str, labels)))  # no header, no final newline
    np.testing.assert_array_equal(read_label_file(tmp_path / "c.csv", 5, 3), labels)
    paths = [f"/data/train/{c}/{i}.png" for i, c in enumerate("aabcc")]
    rows = ["path,label", "c/4.png,0", "train/a/0.png,0", "/data/train/b/2.png,2", "a/1.png,2", "./c/3.png,1"]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    np.testing.assert_array_equal(read_label_file(tmp_path / "d.csv", 5, 3, paths), [0, 2, 2, 1, 0])


@pytest.mark.parametrize("content,message", [
    ("0\n1\n2\n", "has 3 labels but the training set has 5 images"),
    ("0\n1\n2\n3\n7\n", "labels outside 0..2 (first: 3 at index 3)"),
    ("0\n1\nx\n1\n0\n", "non-integer label 'x'"),
])
def test_bad_label_files(tmp_path, content, message):
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_label_file(tmp_path / "l.csv", 5, 3)


def test_path_label_csv_must_cover_the_training_set(tmp_path):
    paths = [f"/data/train/{c}/{i}.png" for i, c in enumerate("abc")]
    (tmp_path / "p.csv").write_text("a/0.png,0\nb/1.png,1\n")
    with pytest.raises(DataError, match="no label for 1 of the 3 training images"):
        read_label_file(tmp_path / "p.csv", 3, 3, paths)
    (tmp_path / "p.csv").write_text("a/0.png,0\nb/1.png,1\nzzz.png,1\n")
    with pytest.raises(DataError, match="1 paths in label file .* are not training images"):
        read_label_file(tmp_path / "p.csv", 3, 3, paths)
    with pytest.raises(DataError, match="need an image-folder --data_dir"):
        read_label_file(tmp_path / "p.csv", 3, 3, None)


def test_image_folder_path_label_csv(tmp_path):
    from PIL import Image

    from ebomlc.data.sources import load_image_folder

    rng = np.random.default_rng(4)
    for split, per_class in (("train", 2), ("test", 1)):
        for c in range(10):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    raw = load_image_folder("cifar10", tmp_path, cache=False)
    assert [p.split("/")[-2:] for p in raw.train_paths[:3]] == [["class0", "0.png"], ["class0", "1.png"],
                                                                 ["class1", "0.png"]]
    rows = [f"class{c}/{i}.png,{(c + i) % 10}" for c in reversed(range(10)) for i in range(2)]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    given, clean, _ = given_labels(raw, noisy_labels=str(tmp_path / "labels.csv"))
    np.testing.assert_array_equal(given, [(c + i) % 10 for c in range(10) for i in range(2)])
    np.testing.assert_array_equal(clean, raw.y_train)


def test_gold_lists(tmp_path):
    (tmp_path / "g.txt").write_text("index\n4\n1\n")
    np.testing.assert_array_equal(read_gold_list(tmp_path / "g.txt", 10), [1, 4])
    np.save(tmp_path / "g.npy", np.array([7, 2]))
    np.testing.assert_array_equal(read_gold_list(tmp_path / "g.npy", 10), [2, 7])
    paths = [f"/d/train/k/{i}.png" for i in range(10)]
    (tmp_path / "p.txt").write_text("k/3.png\nk/5.png\n")
    np.testing.assert_array_equal(read_gold_list(tmp_path / "p.txt", 10, paths), [3, 5])
    for content, message in [("20\n30\n", "overlaps no training image: its indices run 20..30"),
                             ("1\n30\n", "1 indices outside 0..9"), ("1\n1\n", "lists index 1 more than once")]:
        (tmp_path / "bad.txt").write_text(content)
        with pytest.raises(DataError, match=message):
            read_gold_list(tmp_path / "bad.txt", 10)
    np.save(tmp_path / "empty.npy", np.array([], dtype=np.int64))
    with pytest.raises(DataError, match="is empty"):
        read_gold_list(tmp_path / "empty.npy", 10)
    (tmp_path / "nomatch.txt").write_text("x/1.png\nx/2.png\n")
    with pytest.raises(DataError, match="none of the 2 paths in gold list"):
        read_gold_list(tmp_path / "nomatch.txt", 10, paths)


def _cifar_n(path, n, k, rng, **extra):
    """A small file of CIFAR-10N's shape: numpy label arrays under its keys."""
    clean = rng.integers(0, k, n)
    d = {"clean_label": clean, "aggre_label": clean.copy(), "worse_label": (clean + 1) % k,
         "random_label1": rng.integers(0, k, n), "random_label2": clean.copy(), "random_label3": clean.copy(), **extra}
    torch.save(d, path)
    return d


def test_cifar_n_reader(tmp_path):
    rng = np.random.default_rng(0)
    d = _cifar_n(tmp_path / "CIFAR-10_human.pt", 12, 10, rng)
    labels, clean = read_noise_file(tmp_path / "CIFAR-10_human.pt", "worse_label", 12, 10)
    np.testing.assert_array_equal(labels, d["worse_label"])
    np.testing.assert_array_equal(clean, d["clean_label"])
    with pytest.raises(DataError, match="'noisy' is not in .*; it has: aggre_label, clean_label, random_label1"):
        read_noise_file(tmp_path / "CIFAR-10_human.pt", "noisy", 12, 10)
    with pytest.raises(DataError, match="has 12 labels but the training set has 13 images"):
        read_noise_file(tmp_path / "CIFAR-10_human.pt", "worse_label", 13, 10)
    # CIFAR-100N: fine noisy labels (here as a torch tensor) and coarse ones, which need 20 classes
    torch.save({"clean_label": np.arange(6) * 16, "noisy_label": torch.tensor([1, 2, 3, 4, 5, 99]),
                "noisy_coarse_label": np.arange(6)}, tmp_path / "CIFAR-100_human.pt")
    labels, clean = read_noise_file(tmp_path / "CIFAR-100_human.pt", "noisy_label", 6, 100)
    assert labels.tolist() == [1, 2, 3, 4, 5, 99] and clean.tolist() == [0, 16, 32, 48, 64, 80]
    with pytest.raises(DataError, match="20 superclasses"):
        read_noise_file(tmp_path / "CIFAR-100_human.pt", "noisy_coarse_label", 6, 100)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="cannot read .* as a CIFAR-N label file"):
        read_noise_file(tmp_path / "junk.pt", "worse_label", 6, 10)


def test_cifar_n_file_builds_the_problem_and_a_noise_key_grid(tmp_path, digits):
    n, y = len(digits.y_train), digits.y_train
    rng = np.random.default_rng(1)
    flip = rng.random(n) < 0.3
    torch.save({"clean_label": y, "worse_label": np.where(flip, (y + 1) % 10, y), "aggre_label": y.copy()},
               tmp_path / "n.pt")
    configs = [TrainConfig(noise_file=str(tmp_path / "n.pt"), noise_key=key, **FAST).resolved()
               for key in ("worse_label", "aggre_label")]
    worse, aggre = (load_data(c, torch.device("cpu")) for c in configs)
    assert worse.realised_noise_rate() == pytest.approx(flip[worse.silver_index].mean())
    assert aggre.realised_noise_rate() == 0.0
    assert not flip[worse.gold_index].any()  # gold is drawn among images whose given label is trusted
    assert len(worse.gold_index) == 70 and worse.summary()["label_source"] == "file"
    # a study grid over noise_key varies only that TrainConfig field; caches must key on it
    assert data_key(configs[0]) != data_key(configs[1])
    # a clean_label that disagrees with the dataset means the file follows another image order
    torch.save({"clean_label": np.roll(y, 1), "worse_label": y}, tmp_path / "shuffled.pt")
    with pytest.raises(DataError, match="disagree with digits's training labels"):
        given_labels(digits, noise_file=str(tmp_path / "shuffled.pt"), noise_key="worse_label")


def test_config_validation(tmp_path):
    f = tmp_path / "l.npy"
    np.save(f, np.zeros(3, dtype=np.int64))
    for options, message in [
        (dict(noise_key="worse_label"), "--noise_key names labels inside a --noise_file"),
        (dict(noise_file=str(f)), "--noise_file needs --noise_key"),
        (dict(noisy_labels=str(f), noise_file=str(f), noise_key="x"), "pass only one"),
        (dict(gold_indices=str(f)), "--gold_indices goes with --noisy_labels or --noise_file"),
        (dict(noisy_labels=str(tmp_path / "missing.csv")), "file '.*missing.csv' does not exist"),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**options, **FAST).resolved()
    assert TrainConfig(noisy_labels=str(f), **FAST).resolved().noisy_labels == str(f.resolve())


# ---------------------------------------------------------------------------- the CLI
def _write_noisy_problem(tmp_path, digits, level=0.4, seed=3):
    """Synthetic noise written as files: full-length given labels and the gold indices."""
    data = build_noisy_data(digits, "unif", level, 0.05, seed)
    given = digits.y_train.copy()
    given[data.silver_index] = data.silver_noisy.numpy()
    np.save(tmp_path / "noisy.npy", given)
    (tmp_path / "gold.txt").write_text("\n".join(map(str, data.gold_index)) + "\n")
    return data, given


@pytest.mark.parametrize("kind,message", [
    ("short", "has 1436 labels but the training set has 1437 images"),
    ("range", "labels outside 0..9"),
    ("gold", "overlaps no training image"),
    ("key", "--noise_key 'nope' is not in"),
])
def test_bad_label_input_is_one_line_and_writes_nothing(tmp_path, capsys, digits, kind, message):
    _, given = _write_noisy_problem(tmp_path, digits)
    flags = ["--noisy_labels", str(tmp_path / "noisy.npy")]
    if kind == "short":
        np.save(tmp_path / "noisy.npy", given[:-1])
    elif kind == "range":
        given[5] = 10
        np.save(tmp_path / "noisy.npy", given)
    elif kind == "gold":
        (tmp_path / "gold.txt").write_text("5000\n5001\n")
        flags += ["--gold_indices", str(tmp_path / "gold.txt")]
    else:
        torch.save({"worse_label": given}, tmp_path / "n.pt")
        flags = ["--noise_file", str(tmp_path / "n.pt"), "--noise_key", "nope"]
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--quiet"] + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_label_file_run_equals_synthetic_run(tmp_path, digits):
    _write_noisy_problem(tmp_path, digits, seed=3)
    common = dict(method="ebomlc", epochs=2, max_steps_per_epoch=2, corruption_level=0.4, seed=3, **FAST)
    synthetic = train_run(TrainConfig(**common), tmp_path / "synthetic", progress=False)
    assert main(["train", "--method", "ebomlc", "--dataset", "digits", "--epochs", "2", "--max_steps_per_epoch", "2",
                 "--seed", "3", "--device", "cpu", "--noisy_labels", str(tmp_path / "noisy.npy"),
                 "--gold_indices", str(tmp_path / "gold.txt"), "--out", str(tmp_path / "file"), "--quiet"]) == 0
    from_file = json.loads((tmp_path / "file" / "summary.json").read_text())
    a = torch.load(tmp_path / "synthetic" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "file" / "checkpoint.pt", weights_only=False)
    drop = ("epoch_time", "train_time", "eval_time")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"]) and "lc_acc" in a["history"][-1]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    same = ("final_test_acc", "n_gold", "n_silver", "realised_noise_rate", "label_correction_acc")
    assert {k: synthetic[k] for k in same} == {k: from_file[k] for k in same}


def test_correct_ranks_corrupted_labels_first(tmp_path, digits, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "ebomlc", "--dataset", "digits", "--corruption_level", "0.4",
                 "--gold_fraction", "0.1", "--meta_lr", "1e-3", "--epochs", "4", "--device", "cpu",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["correct", str(out), "--out", str(tmp_path / "corrected.csv"), "--device", "cpu"]) == 0
    assert "wrote 1297 silver images" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "corrected.csv")
    assert list(table.columns) == ["index", "given_label", "corrected_label", "confidence", "given_label_prob",
                                   "changed"]
    assert len(table) == 1297 and table["index"].is_unique
    assert table["given_label_prob"].is_monotonic_increasing  # likeliest mistakes first
    assert (table["changed"] == (table["corrected_label"] != table["given_label"])).all()
    assert (table["confidence"] >= table["given_label_prob"] - 1e-6).all()
    corrupted = table["given_label"].to_numpy() != digits.y_train[table["index"].to_numpy()]
    assert 0.3 < corrupted.mean() < 0.45
    score = roc_auc_score(corrupted, -table["given_label_prob"].to_numpy())
    print(f"AUROC of the corrected-label ranking: {score:.3f}")
    assert score > 0.75, score


def test_correct_needs_a_label_correcting_run(tmp_path, capsys):
    out = tmp_path / "ce"
    assert main(["train", "--method", "ce", "--dataset", "digits", "--epochs", "1", "--max_steps_per_epoch", "1",
                 "--gold_fraction", "0.05", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    for run, message in [(out, "was trained with --method ce, which has no label-correcting meta model"),
                         (tmp_path / "nope", "does not exist")]:
        assert main(["correct", str(run), "--out", str(tmp_path / "c.csv")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "c.csv").exists()


# ---------------------------------------------------------------------------- the API
def test_fit_correct_without_true_labels(digits):
    from ebomlc.api import fit_correct

    x, y = digits.x_train[:300], digits.y_train[:300]
    noisy = np.where(np.arange(300) % 3 == 0, (y + 3) % 10, y)
    gold = np.arange(0, 300, 10) + 1  # trusted: indices 1, 11, ... keep their (clean) labels
    table = fit_correct(x, noisy, gold, epochs=1, max_steps_per_epoch=2, bs=50, paths=[f"img{i}.png" for i in range(300)])
    assert list(table.columns) == ["index", "path", "given_label", "corrected_label", "confidence",
                                   "given_label_prob", "changed"]
    assert len(table) == 270 and not set(table["index"]) & set(gold)
    assert (table["path"] == [f"img{i}.png" for i in table["index"]]).all()
    assert (table["given_label"].to_numpy() == noisy[table["index"].to_numpy()]).all()
    row = table.attrs["history"][-1]
    assert "test_acc" in row and "lc_acc" not in row  # no true labels: no label-correction metrics
    assert table.attrs["summary"]["realised_noise_rate"] is None
    with pytest.raises(DataError, match="overlaps no training image"):
        fit_correct(x, noisy, [400, 401], epochs=1)
    for labels, message in [(noisy.astype(str), "noisy_labels must hold integer class numbers"),
                            ([None] * 300, "noisy_labels must hold integer class numbers"),
                            (np.where(noisy == 0, np.nan, noisy), "noisy_labels must hold whole class numbers")]:
        with pytest.raises(DataError, match=message):  # before the class count is guessed from them
            fit_correct(x, labels, gold, epochs=1)
    with pytest.raises(DataError, match="y_test must hold integer class numbers"):
        fit_correct(x, noisy, gold, x_test=x[:5], y_test=["a"] * 5, epochs=1)
