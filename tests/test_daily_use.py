"""Daily use of `ebomlc train` / `ebomlc correct`: capped smoke runs evaluate a bounded number of images,
damaged or early-killed runs, changed options on resume, `correct` on study trials, one set of options,
blow-up detection and the label-correction CSV."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ebomlc.train.evaluate as evaluate
import ebomlc.train.loop as loop
from ebomlc.cli import RUN_FLAGS, build_parser, main
from ebomlc.config import TrainConfig
from ebomlc.correct import correct_run, trainer_corrections
from ebomlc.data.sources import RawDataset
from ebomlc.train import Trainer, train_run
from tune.spec import OPTIONS

DIGITS = ["--dataset", "digits", "--gold_fraction", "0.05", "--device", "cpu", "--threads", "1"]


def _run(tmp_path: Path, *flags: str, name: str = "run") -> Path:
    out = tmp_path / name
    assert main(["train", *DIGITS, "--epochs", "1", "--max_steps_per_epoch", "2", "--out", str(out), "--quiet",
                 *flags]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------- 1. capped runs
def test_a_capped_cifar_shaped_run_evaluates_a_bounded_number_of_images(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    raw = RawDataset("cifar10", rng.integers(0, 256, (6000, 3, 32, 32), dtype=np.uint8), np.arange(6000) % 10,
                     rng.integers(0, 256, (10000, 3, 32, 32), dtype=np.uint8), np.arange(10000) % 10, 10,
                     mean=(0.5,) * 3, std=(0.25,) * 3, pad=4, flip=True)
    monkeypatch.setattr(loop, "cached_dataset", lambda *a, **k: raw)
    seen = {"test": 0, "silver": 0}
    real = evaluate._features

    def counting(model, x, data, chunk=1000, on_eval=None, what="test"):
        seen[what] += len(x)
        return real(model, x, data, chunk, on_eval, what)

    monkeypatch.setattr(evaluate, "_features", counting)
    config = TrainConfig(method="ebomlc", dataset="cifar10", model="small_cnn", epochs=2, max_steps_per_epoch=1,
                         bs=8, device="cpu", gold_fraction=0.02)
    summary = train_run(config, tmp_path / "smoke", progress=True)
    # two epochs: 1,000 test and 1,000 silver images each, and no second label-correction pass at the end
    assert seen == {"test": 2000, "silver": 2000}
    assert summary["n_test"] == 10000 and summary["wall_time"] >= summary["train_time"]
    err = capsys.readouterr().err
    assert re.search(r"epoch 2/2 .* \d+\.\ds \+ \d+\.\ds eval", err), err
    # an explicit --eval_subset wins; an uncapped run evaluates everything
    seen.update(test=0, silver=0)
    trainer = Trainer(dataclasses.replace(config, eval_subset=300, epochs=1))
    trainer.run_epoch()
    assert seen == {"test": 300, "silver": 300}
    assert loop.evaluation_size(dataclasses.replace(config, max_steps_per_epoch=None)) is None
    assert loop.evaluation_size(dataclasses.replace(config, max_steps_per_epoch=20, bs=100)) == 2000


# ---------------------------------------------------------------------------- 2-4. resume
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_checkpoint_is_one_line_and_the_run_stays(tmp_path, capsys, damage):
    out = _run(tmp_path)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2] if damage == "truncated" else b"")
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt is damaged or incomplete" in err[0], err
    assert _snapshot(out) == before
    assert main(["correct", str(out)]) == 2
    assert "damaged or incomplete" in capsys.readouterr().err


def test_a_run_killed_before_its_first_checkpoint_resumes_from_epoch_1(tmp_path, monkeypatch, capsys):
    full = _run(tmp_path, "--epochs", "2", name="full")
    original = Trainer.run_epoch

    def killed(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_epoch", killed)
    out = tmp_path / "killed"
    assert main(["train", *DIGITS, "--epochs", "2", "--max_steps_per_epoch", "2", "--out", str(out),
                 "--quiet"]) == 130
    monkeypatch.setattr(Trainer, "run_epoch", original)
    assert (out / "config.json").is_file() and not (out / "checkpoint.pt").exists()
    capsys.readouterr()
    assert main(["train", *DIGITS, "--epochs", "2", "--out", str(out), "--quiet"]) == 2
    assert "--resume restarts it from epoch 1" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert "no checkpoint yet: from the start" in capsys.readouterr().err
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, out))
    assert b["epochs"] == 2 and b["final_test_acc"] == a["final_test_acc"]
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_changed_options_on_resume_are_refused_but_more_epochs_are_fine(tmp_path, capsys):
    out = _run(tmp_path, "--method", "ebomlc")
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--rho", "0.9", "--main_lr", "0.05", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--main_lr 0.1 -> 0.05, --rho 0.2 -> 0.9" in err[0], err
    assert _snapshot(out) == before
    # the values it already has, more epochs and another device or thread count are fine
    assert main(["train", "--resume", "--out", str(out), "--rho", "0.2", "--epochs", "2", "--threads", "2",
                 "--device", "cpu", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert main(["train", "--resume", "--quiet"]) == 2
    assert "--resume needs the run" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 5. correct on a trial
def test_correct_reads_a_study_trial_directory_and_its_latest_checkpoint(tmp_path):
    config = TrainConfig(method="ebomlc", dataset="digits", epochs=2, max_steps_per_epoch=2, gold_fraction=0.05,
                         device="cpu")
    trainer = Trainer(config)
    trial = tmp_path / "trial"
    tables = []
    for epoch in (1, 2):
        trainer.run_epoch()
        (trial / f"checkpoint_{epoch - 1:06d}").mkdir(parents=True)
        torch.save(trainer.state_dict(), trial / f"checkpoint_{epoch - 1:06d}" / "trainer.pt")
        tables.append(trainer_corrections(trainer))
    (trial / "params.json").write_text(json.dumps(config.to_dict()))
    pd.testing.assert_frame_equal(correct_run(trial), tables[1])  # the latest checkpoint
    pd.testing.assert_frame_equal(correct_run(trial / "checkpoint_000000"), tables[0])
    assert main(["correct", str(trial)]) == 0
    assert len(pd.read_csv(trial / "corrected_labels.csv")) == len(tables[1])
    assert main(["correct", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------- 7. one set of options
def _train_actions():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return [a for a in sub.choices["train"]._actions if a.dest != "help"]


def test_every_option_is_a_flag_of_train_and_of_a_study_spec():
    flags = {a.dest for a in _train_actions()} - set(RUN_FLAGS)
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"mix"}
    assert flags == fields
    assert set(OPTIONS) - {"mix"} == flags - {"runid", "method"}  # a study names its methods in `methods`


def test_every_default_is_shown_in_help():
    for action in _train_actions():
        if action.const is True:  # store_true switches
            continue
        assert "default" in (action.help or ""), action.dest


def test_new_flags_reach_the_config(tmp_path):
    out = _run(tmp_path, "--momentum", "0.5", "--weight_decay", "0", "--lr_milestones", "1,2", "--eps", "1e-6",
               "--blowup_factor", "50")
    saved = json.loads((out / "config.json").read_text())
    assert (saved["momentum"], saved["weight_decay"], saved["lr_milestones"], saved["eps"], saved["blowup_factor"]) == \
        (0.5, 0.0, [1, 2], 1e-6, 50.0)
    assert re.fullmatch(r"ebomlc-digits-\d{8}-\d{6}", saved["runid"])


# ---------------------------------------------------------------------------- 11. blow-up
def test_a_blown_up_loss_ends_the_run_with_one_line_and_a_summary(tmp_path, monkeypatch, capsys):
    ce = loop.METHODS["ce"]

    def inflating(ctx, batch):
        out = ce.step(ctx, batch)
        blown = len(getattr(inflating, "calls", [])) >= 2
        inflating.calls = getattr(inflating, "calls", []) + [1]
        return {**out, "train_loss": out["train_loss"] * (1e4 if blown else 1.0)}

    monkeypatch.setitem(loop.METHODS, "ce", dataclasses.replace(ce, step=inflating))
    out = tmp_path / "blown"
    assert main(["train", *DIGITS, "--method", "ce", "--epochs", "3", "--max_steps_per_epoch", "2", "--out",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blew up at epoch 2: train_loss" in err[0] and "over 100x" in err[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert "blew up" in summary["diverged"] and summary["epochs"] == 1
    # the bound is settable, and 0 turns the check off
    inflating.calls = []
    assert main(["train", *DIGITS, "--method", "ce", "--epochs", "3", "--max_steps_per_epoch", "2", "--out",
                 str(tmp_path / "off"), "--quiet", "--blowup_factor", "0"]) == 0


# ---------------------------------------------------------------------------- label_correction.csv
def test_label_correction_csv_has_a_header(tmp_path):
    out = _run(tmp_path, "--method", "ebomlc")
    table = pd.read_csv(out / "label_correction.csv")
    assert list(table.columns) == ["true_label", *map(str, range(10))]
    assert table["true_label"].tolist() == list(range(10))
    summary = json.loads((out / "summary.json").read_text())
    counts = table.drop(columns="true_label").to_numpy()
    assert summary["label_correction_acc"] == pytest.approx(np.trace(counts) / counts.sum())


def test_python_resume_follows_the_same_rules(tmp_path):
    import ebomlc

    out = tmp_path / "py"
    ebomlc.train(method="ce", dataset="digits", epochs=1, max_steps_per_epoch=2, gold_fraction=0.05, device="cpu",
                 out=out, progress=False)
    assert ebomlc.train(out=out, resume=True, epochs=2, progress=False)["epochs"] == 2
    with pytest.raises(ebomlc.EbomlcError, match="--main_lr 0.1 -> 0.5"):
        ebomlc.train(out=out, resume=True, epochs=3, main_lr=0.5, progress=False)


def test_resume_overlays_given_options_and_needs_more_epochs(tmp_path, capsys):
    out = _run(tmp_path, "--method", "ce", "--epochs", "2")
    capsys.readouterr()
    # repeating one option of a pair that needs the other is judged against the saved run, not defaults
    assert main(["train", "--resume", "--out", str(out), "--dataset", "digits", "--epochs", "3", "--quiet"]) == 0
    before = _snapshot(out)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has done 3 epochs already" in err[0], err
    assert _snapshot(out) == before
