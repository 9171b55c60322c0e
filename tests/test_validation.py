"""Validation split: held out of training (clean or noisy labels) or the gold set reused; never in a training
batch; val metrics and the best-validation epoch (surviving resume); studies that choose refuse test metrics;
PBT's donor is the trial best by validation."""
from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import analysis
from analysis.report import chosen_by, population_lines
from ebomlc.cli import main
from ebomlc.config import TrainConfig
from ebomlc.data import RawDataset, build_labelled_data, build_noisy_data
from ebomlc.errors import ConfigError, DataError
from ebomlc.train import Trainer, train_run
from ebomlc.train.loop import best_validation
from tune.spec import load_spec

from .studies import ROOT, results, trial_dirs
from .test_analysis_support import epoch_lines, params, write_trial

FAST = dict(dataset="digits", gold_fraction=0.05, device="cpu", threads=1, max_steps_per_epoch=3, bs=32)


def _partition(d, n):
    parts = [d.gold_index, d.silver_index, d.val_index]
    every = np.concatenate(parts)
    return len(every) == len(np.unique(every)) == n


# ---------------------------------------------------------------------------- the split
@pytest.mark.parametrize("source", ["clean", "noisy"])
def test_held_out_validation_is_disjoint_class_balanced_and_seeded(digits, source):
    n, k = len(digits.y_train), digits.num_classes
    plain = build_noisy_data(digits, "unif", 0.4, 0.05, 1)
    d = build_noisy_data(digits, "unif", 0.4, 0.05, 1, val_fraction=0.1, val_source=source)
    assert _partition(d, n)  # gold, silver and validation are disjoint and cover the training set
    assert torch.equal(d.x_test, plain.x_test) and torch.equal(d.y_test, plain.y_test)  # the test set untouched
    per_class = int(0.1 * n / k)
    assert np.array_equal(np.bincount(d.y_val.numpy(), minlength=k), [per_class] * k)
    assert torch.equal(d.x_val, torch.from_numpy(digits.x_train[d.val_index]))
    assert len(d.gold_index) == len(plain.gold_index)  # the gold count counts the whole training set
    if source == "clean":
        assert np.array_equal(d.y_val.numpy(), digits.y_train[d.val_index])  # true labels
    else:
        # gold and noise as without validation; the validation images keep the noisy labels they had in silver
        assert np.array_equal(d.gold_index, plain.gold_index)
        where = np.searchsorted(plain.silver_index, d.val_index)
        assert np.array_equal(plain.silver_index[where], d.val_index)
        assert np.array_equal(d.y_val.numpy(), plain.silver_noisy.numpy()[where])
        assert (d.y_val.numpy() != digits.y_train[d.val_index]).any()
    again = build_noisy_data(digits, "unif", 0.4, 0.05, 1, val_fraction=0.1, val_source=source)
    other = build_noisy_data(digits, "unif", 0.4, 0.05, 2, val_fraction=0.1, val_source=source)
    assert np.array_equal(again.val_index, d.val_index) and not np.array_equal(other.val_index, d.val_index)
    assert d.summary()["n_val"] == per_class * k and d.summary()["val_held_out"] is True


def test_val_fraction_zero_builds_the_same_data_and_gold_reused_is_the_gold_set(digits):
    plain = build_noisy_data(digits, "instance", 0.4, 0.05, 3)
    zero = build_noisy_data(digits, "instance", 0.4, 0.05, 3, val_fraction=0.0, val_source="noisy")
    for field in ("x_silver", "silver_noisy", "silver_true", "x_gold", "y_gold"):
        assert torch.equal(getattr(plain, field), getattr(zero, field)), field
    assert zero.y_val is None and zero.val_source is None and "n_val" not in zero.summary()
    gold = build_noisy_data(digits, "instance", 0.4, 0.05, 3, val_source="gold_reused")
    assert torch.equal(gold.x_val, plain.x_gold) and torch.equal(gold.y_val, plain.y_gold)
    assert torch.equal(gold.x_silver, plain.x_silver)
    assert gold.summary()["val_source"] == "gold_reused" and gold.summary()["val_held_out"] is False


def test_label_files_hold_out_from_the_trusted_images_or_the_gold_list(digits):
    n, k = len(digits.y_train), digits.num_classes
    rng = np.random.default_rng(0)
    given = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), digits.y_train)
    d = build_labelled_data(digits, given, 0.05, 1, clean=digits.y_train, val_fraction=0.05, val_source="clean")
    assert _partition(d, n) and (given[d.val_index] == digits.y_train[d.val_index]).all()  # trusted only
    assert np.array_equal(np.bincount(d.y_val.numpy(), minlength=k), [int(0.05 * n / k)] * k)
    listed = np.flatnonzero(given == digits.y_train)[::4]
    d = build_labelled_data(digits, given, 0.05, 1, gold=listed, val_fraction=0.02, val_source="clean")
    assert _partition(d, n) and set(d.val_index) <= set(listed) and set(d.gold_index) == set(listed) - set(d.val_index)
    d = build_labelled_data(digits, given, 0.05, 1, gold=listed, val_fraction=0.05, val_source="noisy")
    assert _partition(d, n) and not set(d.val_index) & set(listed)
    assert np.array_equal(d.y_val.numpy(), given[d.val_index])
    few = np.concatenate([np.flatnonzero(digits.y_train == c)[:3] for c in range(k)])
    with pytest.raises(DataError, match="holds out every gold image of class 0"):
        build_labelled_data(digits, digits.y_train, 0.05, 1, gold=few, val_fraction=0.021, val_source="clean")
    with pytest.raises(ConfigError, match="only 3 images of the gold list of that class"):
        build_labelled_data(digits, digits.y_train, 0.05, 1, gold=few, val_fraction=0.03, val_source="clean")


@pytest.mark.parametrize("argv, message", [
    (["--val_fraction", "0.001"], "--val_fraction 0.001 gives fewer than one validation image per class"),
    (["--val_fraction", "0.1", "--val_source", "gold_reused"], "--val_source gold_reused validates on the gold set"),
    (["--val_fraction", "1.0"], "--val_fraction must lie in [0, 1)"),
    (["--val_fraction", "0.9", "--val_source", "clean"], "gold images per class that --gold_fraction asks for; lower "
                                                         "--val_fraction"),
    (["--val_fraction", "0.96", "--val_source", "noisy"], "validation images of class"),
])
def test_bad_validation_options_are_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--gold_fraction", "0.05", "--device", "cpu",
                 "--quiet", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing half-written


# ---------------------------------------------------------------------------- training never sees it
def _marked(n_train: int = 300, k: int = 10) -> RawDataset:
    """Random 1x8x8 images whose first two pixels spell the image's training index (base 256)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train, 1, 8, 8), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n_train) % 256, np.arange(n_train) // 256
    y = np.arange(n_train) % k
    return RawDataset("marked", x, y, x[:50].copy(), y[:50].copy(), k, mean=(0.5,), std=(0.25,), pad=1, flip=False)


@pytest.mark.parametrize("method, source", [("ebomlc", "clean"), ("ce", "noisy"), ("mlc", "noisy")])
def test_no_validation_image_is_in_a_training_batch(monkeypatch, method, source):
    raw = _marked()
    data = build_noisy_data(raw, "unif", 0.4, 0.1, 1, val_fraction=0.2, val_source=source)
    seen = []
    real = Trainer._augment
    monkeypatch.setattr(Trainer, "_augment", lambda self, x: seen.append(x.clone()) or real(self, x))
    trainer = Trainer(TrainConfig(method=method, dataset="digits", epochs=3, bs=30, gold_fraction=0.1, device="cpu",
                                  model="small_cnn", val_fraction=0.2, val_source=source), data=data)
    for _ in range(3):
        row = trainer.run_epoch()
    ids = np.concatenate([(b[:, 0, 0, 0].long() + 256 * b[:, 0, 0, 1].long()).numpy() for b in seen])
    assert len(data.val_index) == 60 and "val_acc" in row and "val_loss" in row
    assert not np.isin(ids, data.val_index).any()  # no validation image in any batch, silver or gold
    assert set(np.unique(ids)) == set(data.silver_index) | set(data.gold_index)  # every other image trained on


def test_gold_reused_validation_leaves_training_bit_identical():
    """Evaluating the validation set draws no random numbers: a run with val_source gold_reused trains and tests
    exactly as one without validation."""
    base = dict(method="ebomlc", epochs=2, **FAST)
    plain, val = Trainer(TrainConfig(**base)), Trainer(TrainConfig(**base, val_source="gold_reused"))
    for _ in range(2):
        a, b = plain.run_epoch(), val.run_epoch()
        assert {k: v for k, v in b.items() if not k.startswith("val_") and "time" not in k} == \
            {k: v for k, v in a.items() if "time" not in k}
    assert all(torch.equal(p, q) for p, q in zip(plain.model.state_dict().values(), val.model.state_dict().values()))
    assert "val_acc" not in a and 0.0 <= b["val_acc"] <= 1.0


def test_eval_subset_caps_the_validation_set_too():
    trainer = Trainer(TrainConfig(method="ce", epochs=1, eval_subset=50, val_fraction=0.1, **FAST))
    assert len(trainer.data.y_val) == 140 and len(trainer.eval_data.y_val) == 50 and len(trainer.eval_data.y_test) == 50


# ---------------------------------------------------------------------------- bookkeeping
def test_best_validation_is_the_first_epoch_of_highest_val_acc():
    history = [{"epoch": 1, "val_acc": 0.5, "test_acc": 0.9}, {"epoch": 2, "test_acc": 0.95},
               {"epoch": 3, "val_acc": 0.7, "test_acc": 0.6}, {"epoch": 4, "val_acc": 0.7, "test_acc": 0.8},
               {"epoch": 5, "val_acc": 0.6, "test_acc": 0.99}]
    assert best_validation(history) == {"best_val_epoch": 3, "best_val_acc": 0.7, "test_acc_at_best_val": 0.6,
                                        "final_val_acc": 0.6}
    assert best_validation([{"epoch": 1, "test_acc": 0.5}]) == {}


def test_the_best_validation_epoch_survives_resume(tmp_path):
    config = TrainConfig(method="ebomlc", epochs=4, lr_milestones=(3,), val_fraction=0.1, val_source="noisy", **FAST)
    whole = train_run(config, tmp_path / "whole", progress=False)
    train_run(TrainConfig(**{**config.to_dict(), "epochs": 2}), tmp_path / "part", progress=False)
    resumed = train_run(config, tmp_path / "part", resume=True, progress=False, epochs=4)
    keys = ("best_val_epoch", "best_val_acc", "test_acc_at_best_val", "final_val_acc", "final_test_acc")
    assert {k: whole[k] for k in keys} == {k: resumed[k] for k in keys}
    rows = pd.read_csv(tmp_path / "part" / "metrics.csv")
    best = rows.loc[rows["val_acc"].idxmax()]
    assert resumed["best_val_epoch"] == best["epoch"] and resumed["test_acc_at_best_val"] == best["test_acc"]
    saved = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert saved["n_val"] == 140 and saved["val_source"] == "noisy"
    assert json.loads((tmp_path / "part" / "config.json").read_text())["val_fraction"] == 0.1


# ---------------------------------------------------------------------------- studies choose on validation
SEARCH = {"name": "s", "dataset": "digits", "methods": ["ebomlc"], "options": {"epochs": 2, "gold_fraction": 0.05},
          "search": {"num_samples": 2, "space": {"rho": {"uniform": [0.0, 1.0]}},
                     "scheduler": {"type": "asha", "grace_period": 1}}}
PBT = {"name": "p", "dataset": "digits", "methods": ["ebomlc"], "grid": {"seed": [1, 2]},
       "options": {"epochs": 2, "gold_fraction": 0.05, "val_fraction": 0.1},
       "scheduler": {"type": "pbt", "perturbation_interval": 1, "mutations": {"rho": {"uniform": [0.0, 1.0]}}},
       "checkpoint": {"every": 1, "keep": None}}


@pytest.mark.parametrize("spec, message", [
    ({**SEARCH, "metric": "test_acc"}, "metric: test_acc is measured on the test set, and a search proposes and "
                                       "stops trials by it"),
    ({**PBT, "metric": "test_loss"}, "write `metric: val_loss`"),
    ({**PBT, "metric": "test_acc"}, "a population schedule copies the weights"),
    (SEARCH, "metric: val_acc needs a validation set, but the search's options has none; set options.val_fraction"),
    ({**PBT, "options": {"epochs": 2}, "grid": {"val_fraction": [0.0, 0.1]}},
     "but trial method=ebomlc, val_fraction=0.0 has none"),
])
def test_a_study_that_chooses_on_a_test_metric_or_without_validation_is_refused(spec, message):
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_choosing_studies_default_to_val_acc_and_grids_may_report_test():
    search = load_spec({**SEARCH, "options": {**SEARCH["options"], "val_fraction": 0.1}})
    assert search.metric == "val_acc" and search.mode == "max"
    assert load_spec({**PBT, "metric": "val_loss"}).mode == "min"
    grid = {k: v for k, v in PBT.items() if k != "scheduler"}
    assert load_spec(grid).metric == "test_acc"
    assert load_spec({**grid, "options": {"epochs": 2, "val_source": "gold_reused"}, "metric": "val_acc"})
    with pytest.raises(ConfigError, match="val_fraction cannot be searched"):
        load_spec({**SEARCH, "search": {**SEARCH["search"], "space": {"val_fraction": {"uniform": [0.1, 0.2]}}}})


@pytest.mark.parametrize("name", ["search_digits", "pbt_digits", "pbt_digits_fixed", "pbt_cifar10"])
def test_the_shipped_choosing_studies_select_on_validation(name):
    study = load_spec(ROOT / "tune" / "studies" / f"{name}.yaml", check_trials=name != "pbt_cifar10")
    assert study.metric == "val_acc" and study.options["val_fraction"] > 0 and study.options["val_source"] == "clean"


# ---------------------------------------------------------------------------- PBT's donor
def _fake_trainable(config):
    """Reports ``val_acc`` rising with the seed of the trial the weights come from and ``test_acc`` falling
    with it, so validation and test disagree on every ranking; ``origin`` is that seed."""
    import tempfile
    from pathlib import Path

    from ray import tune as ray_tune

    state = {"epoch": 0, "origin": int(config["seed"])}
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / "state.json").read_text())
    while state["epoch"] < config["epochs"]:
        state["epoch"] += 1
        row = {"epoch": state["epoch"], "origin": state["origin"], "val_acc": state["origin"] / 10,
               "test_acc": 1 - state["origin"] / 10, "current_rho": config["rho"]}
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps(state))
            ray_tune.report(row, checkpoint=ray_tune.Checkpoint.from_directory(folder))


def test_the_pbt_donor_is_the_trial_best_by_validation(ray_session, tmp_path, monkeypatch):
    import tune.launch as launch

    monkeypatch.setattr(launch, "_trainable", lambda study: _fake_trainable)
    spec = {**PBT, "name": "donor", "grid": {"seed": [1, 2, 3, 4]}, "options": {**PBT["options"], "epochs": 6},
            "scheduler": {**PBT["scheduler"], "quantile_fraction": 0.25, "resample_probability": 0.0},
            "metric": "val_acc"}
    path = launch.run_study(spec, storage=str(tmp_path), progress=False)
    origins = {}
    for trial in trial_dirs(path):
        rows = results(trial)
        origins[rows[0]["origin"]] = [r["origin"] for r in rows]
    assert sorted(origins) == [1, 2, 3, 4]
    switched = {seed: set(o) - {seed} for seed, o in origins.items() if set(o) != {seed}}
    assert switched, "no trial was exploited"
    # every exploited trial continued from seed 4's weights (best val_acc, worst test_acc), never from seed 1's
    assert all(donors == {4} for donors in switched.values()), switched
    assert origins[4] == [4] * len(origins[4])


# ---------------------------------------------------------------------------- analysis says what chose what
def _val_study(root, scheduler: bool):
    study = root / ("pbt" if scheduler else "grid")
    study.mkdir()
    spec = {"name": study.name, "dataset": "digits", "metric": "val_acc" if scheduler else "test_acc"}
    if scheduler:
        spec["scheduler"] = {"type": "pbt"}
    (study / "study.yaml").write_text(yaml.safe_dump(spec))
    for seed, (val, test) in enumerate([(0.9, 0.5), (0.5, 0.9), (0.7, 0.7)], start=1):
        lines = epoch_lines("ebomlc", test, trial_id=f"t{seed}")
        for e, line in enumerate(lines, start=1):
            line.update(val_acc=val - 0.1 * abs(e - 2), val_loss=1.0)  # best validation at epoch 2
            if scheduler:
                line["current_rho"] = 0.1 * seed
        write_trial(study, f"train_{seed}", params("ebomlc", "unif", 0.4, seed, val_fraction=0.1,
                                                   val_source="clean"), lines)
    return study


def test_analyze_names_the_choosing_metric_and_picks_the_pbt_best_by_validation(tmp_path):
    grid = _val_study(tmp_path, scheduler=False)
    final = analysis.final_results(analysis.load_study(grid))
    assert list(final["best_val_epoch"]) == [2, 2, 2]
    assert np.allclose(final["test_at_best_val"], final["final_test_acc"] - 0.05)  # test at epoch 2 of 3
    assert "Chosen by: nothing" in chosen_by(final)
    analysis.analyze(grid)
    doc = (grid / "analysis" / "rank_table.md").read_text()
    assert "## Test accuracy at the best validation epoch" in doc and "Validation labels: clean (held out" in doc
    assert (grid / "analysis" / "rank_table_best_val.tex").is_file()

    pbt = _val_study(tmp_path, scheduler=True)
    df = analysis.load_study(pbt)
    final = analysis.final_results(df)
    assert "Chosen by `val_acc` (on validation)" in chosen_by(final)
    lines = "\n".join(population_lines(df, final, final, "fixed"))
    # seed 1 is best by validation (0.9) and worst on test (0.5): it is the one reported
    assert "trial best by final `val_acc` **50.00%**" in lines
    assert "| EBOMLC | 0.6000 | 70.00 ± 20.00 | 3 |" in lines and "chose nothing" in lines
    analysis.analyze(pbt)
    doc = (pbt / "analysis" / "rank_table.md").read_text()
    assert "Chosen by `val_acc` (on validation): population based training" in doc and "**50.00%**" in doc


def test_fit_correct_holds_out_a_noisy_validation_set(digits):
    from ebomlc.api import fit_correct

    x, y = digits.x_train[:300], digits.y_train[:300]
    noisy = np.where(np.arange(300) % 3 == 0, (y + 3) % 10, y)
    gold = np.arange(0, 300, 10) + 1
    table = fit_correct(x, noisy, gold, epochs=1, max_steps_per_epoch=2, bs=50, val_fraction=0.1, val_source="noisy")
    summary = table.attrs["summary"]
    assert summary["n_val"] == 30 and summary["val_source"] == "noisy" and "val_acc" in table.attrs["history"][-1]
    assert len(table) == 300 - 30 - 30 and not set(table["index"]) & set(gold)  # silver only: no validation image
