import json
import os

import pytest
import torch

from ebomlc import TrainConfig
from ebomlc.cli import main
from ebomlc.train import Trainer

from .resume import assert_same_checkpoint, kill_in_third_epoch_and_resume
from .tiny import FAST


def test_ce_learns_on_digits_in_seconds():
    trainer = Trainer(TrainConfig(method="ce", epochs=8, corruption_level=0.2, **FAST))
    for _ in range(8):
        row = trainer.run_epoch()
    assert row["test_acc"] > 0.85  # chance is 0.10
    assert set(row) >= {"epoch", "lr", "train_loss", "test_acc", "test_loss", "epoch_time"}


def test_lr_schedule_scales_milestones_to_epochs():
    cfg = TrainConfig(epochs=12, **FAST).resolved()
    assert cfg.milestones() == (8, 10)
    trainer = Trainer(TrainConfig(method="ce", epochs=12, max_steps_per_epoch=1, **FAST))
    lrs = [trainer.run_epoch()["lr"] for _ in range(12)]
    assert lrs[:8] == [0.1] * 8 and lrs[8:10] == pytest.approx([0.01] * 2) and lrs[10:] == pytest.approx([0.001] * 2)


@pytest.mark.parametrize("method", ["ce", "ebomlc", "mlc", "glc", "mwnet"])
def test_resumed_run_equals_uninterrupted(tmp_path, monkeypatch, method):
    cfg = TrainConfig(method=method, epochs=4, corruption_level=0.4, max_steps_per_epoch=3, **FAST)
    killed, full, resumed = kill_in_third_epoch_and_resume(cfg, tmp_path, monkeypatch)
    assert killed["epoch"] == 2
    assert_same_checkpoint(full, resumed)
    assert (tmp_path / "part" / "metrics.csv").read_text().count("\n") == 5


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--method", "ebomlc", "--dataset", "digits", "--epochs", "2", "--gold_fraction",
                 "0.05", "--max_steps_per_epoch", "2", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.csv", "summary.json", "checkpoint.pt",
                                              "label_correction.csv"}
    config = json.loads((out / "config.json").read_text())
    assert config["rho"] == 0.2 and config["inner_steps"] == 1 and config["delta"] == 0.25 and config["xi"] == 0.5
    assert 0 <= config["data"]["realised_noise_rate"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["final_test_acc"] <= 1


BAD = [
    (["--corruption_level", "1.5"], "corruption_level must lie in"),
    (["--corruption_level", "-0.1"], "corruption_level must lie in"),
    (["--gold_fraction", "0.001"], "fewer than one gold image per class"),
    (["--dataset", "mnist"], "no dataset 'mnist': it is not built in"),
    (["--method", "sgd"], "unknown method 'sgd'"),
    (["--corruption_type", "pair"], "unknown corruption_type"),
    (["--bs", "0"], "--bs must be a positive integer"),
    (["--rho", "2"], "--rho must lie in"),
    (["--dataset", "cifar10", "--data_dir", "/nonexistent/cifar"], "no cifar10 data found"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    base = ["train", "--dataset", "digits", "--epochs", "1", "--gold_fraction", "0.05", "--out", str(out), "--quiet"]
    assert main(base + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_existing_run_dir_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("x\n")
    assert main(["train", "--dataset", "digits", "--out", str(out), "--quiet"]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--out", str(tmp_path / "new"), "--resume", "--quiet"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--corruption_level", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid float value" in err[0]


def test_cpu_allocator_setting_respects_the_users_environment():
    import subprocess
    import sys

    code = "from ebomlc.train.allocator import retain_freed_cpu_memory as r; print(r(), r())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    applied = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert applied.stdout.split() == ["True", "True"]  # glibc on Linux; idempotent
    kept = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_TRIM_THRESHOLD_": "0"},
                          capture_output=True, text=True, check=True)
    assert kept.stdout.split() == ["False", "False"]


def test_evaluation_every_n_epochs_on_a_fixed_subset(monkeypatch):
    from ebomlc.train import loop

    seen = []
    real = loop.evaluate_test
    monkeypatch.setattr(loop, "evaluate_test", lambda model, data, *a: seen.append(len(data.y_test)) or real(model, data))
    trainer = Trainer(TrainConfig(method="ebomlc", epochs=5, eval_every=2, eval_subset=100, **FAST))
    rows = [trainer.run_epoch() for _ in range(5)]
    assert [r["epoch"] for r in rows if "test_acc" in r] == [2, 4, 5]  # every 2nd and the last
    assert all("lc_acc" in r for r in rows if "test_acc" in r) and "lc_acc" not in rows[0]
    assert seen == [100, 100, 100]  # images evaluated, not all 360
    assert len(trainer.eval_data.silver_noisy) == 100
    again = Trainer(TrainConfig(method="ce", epochs=1, eval_subset=100, seed=3, **FAST))
    assert torch.equal(again.eval_data.y_test, trainer.eval_data.y_test)  # the same images for every run
    summary = trainer.summary()
    assert summary["final_test_acc"] == rows[-1]["test_acc"] and summary["best_epoch"] in (2, 4, 5)


def test_threads_option_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        Trainer(TrainConfig(method="ce", epochs=1, threads=1, **FAST))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_python_api_train_can_be_called_again(tmp_path):
    """Importing ebomlc.train (the subpackage) used to hide the function ebomlc.train after one call."""
    import ebomlc

    first = ebomlc.train(method="ce", epochs=1, out=tmp_path / "a", progress=False, **FAST)
    import ebomlc.train  # noqa: F401  (the subpackage, now an attribute of ebomlc)

    second = ebomlc.train(method="ce", epochs=1, out=tmp_path / "b", progress=False, **FAST)
    assert first["final_test_acc"] == second["final_test_acc"]
