"""Ray Tune studies end to end on digits: a small study, a diverging trial, a search, and a
driver killed with SIGKILL that resumes every trial from its checkpoint."""
import json
import pickle
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tune.launch import resume_study, run_study, study_status
from tune.repair import checkpoint_managers, newest_state
from tune.spec import load_spec

from .studies import ROOT, results, trial_dirs

ROW_KEYS = {"epoch", "lr", "test_acc", "test_loss", "upper_loss", "lower_loss", "value_gap", "lambda", "lc_acc",
            "lc_acc_clean", "lc_acc_corrupted", "epoch_time", "train_time"}
FAST = {"gold_fraction": 0.05, "device": "cpu", "max_steps_per_epoch": 2}


def test_trials_share_noisy_data_unless_the_data_options_differ():
    import torch

    from ebomlc import TrainConfig
    from tune.trainable import shared_data

    def data(**options):
        return shared_data(TrainConfig(dataset="digits", gold_fraction=0.05, **options).resolved(), torch.device("cpu"))

    base = data(method="ebomlc", seed=1, rho=0.5, epochs=3)
    assert data(method="ce", seed=1, main_lr=0.01) is base  # training options only: shared
    assert data(method="ce", seed=2, data_seed=1) is base
    assert data(method="ce", seed=2) is not base  # seed 2 draws other noise (data_seed = seed)
    assert data(method="ce", seed=1, corruption_level=0.6) is not base


def test_two_trial_study_writes_the_documented_layout(ray_session, tmp_path):
    spec = {"name": "two", "dataset": "digits", "methods": ["ce", "ebomlc"],
            "options": {**FAST, "epochs": 2, "corruption_level": 0.4}}
    path = run_study(spec, storage=str(tmp_path), progress=False)
    assert path == tmp_path / "two"
    assert load_spec(yaml.safe_load((path / "study.yaml").read_text())).name == "two"
    trials = trial_dirs(path)
    assert len(trials) == 2
    by_method = {}
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        assert {"method", "dataset", "corruption_type", "corruption_level", "seed"} <= set(params)
        assert params["dataset"] == "digits" and params["corruption_level"] == 0.4
        rows = results(trial)
        assert [r["epoch"] for r in rows] == [1, 2]
        by_method[params["method"]] = rows
    assert ROW_KEYS <= set(by_method["ebomlc"][0])
    matrix = by_method["ebomlc"][-1]["lc_matrix"]
    assert len(matrix) == 10 and all(len(r) == 10 for r in matrix) and sum(map(sum, matrix)) > 0
    assert "lc_matrix" not in by_method["ebomlc"][0]
    assert "lc_matrix" not in by_method["ce"][-1] and {"test_acc", "train_loss"} <= set(by_method["ce"][-1])
    table = study_status(path)
    assert list(table["state"]) == ["TERMINATED"] * 2 and list(table["epoch"]) == [2, 2]
    assert set(table["method"]) == {"ce", "ebomlc"} and table["test_acc"].between(0, 1).all()


def test_a_study_trial_and_ebomlc_train_give_identical_metrics(ray_session, tmp_path):
    import torch

    from ebomlc import TrainConfig
    from ebomlc.train import train_run

    spec = {"name": "same", "dataset": "digits", "methods": ["ebomlc"],
            "options": {**FAST, "epochs": 2, "corruption_level": 0.4, "variant": "reference", "eval_every": 2}}
    path = run_study(spec, storage=str(tmp_path), progress=False)
    (trial,) = trial_dirs(path)
    params = json.loads((trial / "params.json").read_text())
    assert params["threads"] == 1  # one thread per 1-CPU trial, recorded in the trial's options
    before = torch.get_num_threads()
    try:
        summary = train_run(TrainConfig.from_dict(params), tmp_path / "cli", progress=False)
    finally:
        torch.set_num_threads(before)
    cli = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert {k: v for k, v in cli.items() if k not in ("data", "provenance")} == {**params, "runid": cli["runid"]}
    trial_rows = results(trial)
    assert summary["final_test_acc"] == trial_rows[-1]["test_acc"]
    import csv

    with open(tmp_path / "cli" / "metrics.csv") as f:
        cli_rows = list(csv.DictReader(f))
    keys = ROW_KEYS - {"epoch_time", "train_time", "test_acc", "test_loss", "lc_acc", "lc_acc_clean",
                       "lc_acc_corrupted"}
    for ours, theirs in zip(cli_rows, trial_rows):
        assert all(float(ours[k]) == theirs[k] for k in keys)
    import math

    assert math.isnan(trial_rows[0]["test_acc"])  # not evaluated at epoch 1 (eval_every 2)


def test_a_diverging_trial_errors_and_the_study_goes_on(ray_session, tmp_path, capsys):
    from ebomlc.cli import main

    spec = {"name": "diverge", "dataset": "digits", "methods": ["ce"], "max_failures": 0,
            "options": {**FAST, "epochs": 2}, "grid": {"main_lr": [0.1, 1.0e20]}}
    file = tmp_path / "diverge.yaml"
    file.write_text(yaml.safe_dump(spec))
    assert main(["study", "run", str(file), "--storage", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 trial(s) errored" in err and "DivergedError: training diverged at epoch 1" in err
    table = study_status(tmp_path / "diverge").set_index("main_lr")
    assert table.loc[0.1, "state"] == "TERMINATED" and table.loc[0.1, "epoch"] == 2
    assert table.loc[1e20, "state"] == "ERROR" and "non-finite train_loss" in table.loc[1e20, "error"]
    assert main(["study", "run", str(file), "--storage", str(tmp_path), "--quiet"]) == 2  # exists: resume it
    assert "already exists" in capsys.readouterr().err


def test_optuna_search_with_asha(ray_session, tmp_path):
    spec = {"name": "search", "dataset": "digits", "methods": ["ebomlc"],
            "options": {**FAST, "epochs": 3, "val_fraction": 0.1},
            "search": {"num_samples": 3, "seed": 0, "scheduler": {"type": "asha", "grace_period": 1},
                       "space": {"rho": {"uniform": [0.0, 1.0]}, "inner_steps": {"int": [1, 2]}}}}
    path = run_study(spec, storage=str(tmp_path), progress=False)
    table = study_status(path)
    assert len(table) == 3 and set(table["state"]) == {"TERMINATED"}
    assert table["rho"].between(0, 1).all() and set(table["inner_steps"]) <= {1, 2}
    assert table["epoch"].max() == 3  # ASHA may stop some trials earlier
    for trial in trial_dirs(path):
        params = json.loads((trial / "params.json").read_text())
        assert params["method"] == "ebomlc" and params["dataset"] == "digits" and "rho" in params
        assert all(0.0 <= r["val_acc"] <= 1.0 for r in results(trial))  # what the search chose by


def test_killed_driver_resumes_every_trial_from_its_checkpoint(ray_session, tmp_path):
    epochs = 10  # ~40 steps an epoch: long enough that a trial is still running at the kill, even under load
    spec = {"name": "killed", "dataset": "digits", "methods": ["ebomlc"], "grid": {"seed": [1, 2]},
            "options": {"gold_fraction": 0.05, "device": "cpu", "epochs": epochs, "bs": 32}}
    file = tmp_path / "killed.yaml"
    file.write_text(yaml.safe_dump(spec))
    path = tmp_path / "killed"
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S="1")
    driver = subprocess.Popen([sys.executable, "-m", "ebomlc", "study", "run", str(file), "--storage", str(tmp_path),
                               "--quiet"], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        # until the experiment state records a trial's checkpoint of an epoch before the last
        while not any(0 < epoch < epochs for epoch in _checkpointed_epochs(path).values()):
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no trial checkpointed in time"
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    checkpointed = _checkpointed_epochs(path)  # what the resume will know: trial -> epoch of its checkpoint
    # what the killed driver had recorded of each trial (the experiment state can lag: a trial it records at
    # epoch 1 may already have finished)
    reached = {trial.name: len(results(trial)) for trial in trial_dirs(path)}
    assert any(0 < epoch < epochs for epoch in checkpointed.values()), f"no checkpoint recorded: {checkpointed}"
    assert any(0 < n < epochs for n in reached.values()), f"no trial killed mid-run: {reached}"

    resume_study(path)

    trials = trial_dirs(path)
    assert len(trials) == 2 and len(study_status(path)) == 2
    assert sorted(json.loads((t / "params.json").read_text())["seed"] for t in trials) == [1, 2]
    continued, seen = 0, {}
    for trial in trials:
        rows = results(trial)
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), trial.name  # each epoch once
        done = checkpointed.get(trial.name, 0)
        pids = [row["pid"] for row in rows]
        switch = next((i for i, pid in enumerate(pids) if pid != pids[0]), None)
        seen[trial.name] = (done, reached.get(trial.name), switch, pids)
        if switch is not None:  # continued in a new process: once, and never before the checkpoint it knew
            assert len(set(pids[switch:])) == 1 and pids[0] not in pids[switch:], trial.name
            assert switch >= done, (trial.name, switch, done)
        if 0 < done and reached.get(trial.name, 0) < epochs:  # killed mid-run with a checkpoint the state knew
            # (the old driver may have persisted a later checkpoint than the state read above recorded)
            assert switch is not None and switch > 0, (trial.name, seen[trial.name])
            continued += 1
        # (a trial without a checkpoint in the state restarts from epoch 1: its record is the new run's alone)
    assert continued >= 1, (checkpointed, seen)
    assert set(study_status(path)["state"]) == {"TERMINATED"}


def _checkpointed_epochs(path: Path) -> dict[str, int]:
    """Trial directory name -> epoch of the latest checkpoint the newest experiment state's checkpoint manager
    records: the one a resume restores (its ``last_result`` may name a checkpoint not registered yet)."""
    state, epochs = newest_state(path), {}
    if state is None:
        return epochs
    try:
        for trial, manager in checkpoint_managers(state):
            latest = manager.latest_checkpoint_result
            if latest is not None and latest.checkpoint is not None:
                epochs[trial["relative_logdir"]] = int(latest.metrics["epoch"])
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError):  # being written: read it later
        return {}
    return epochs


def test_a_folder_study_names_its_classes_in_the_rank_table(ray_session, tmp_path):
    import analysis

    from .test_folders import SHAPES, write_folder

    root = write_folder(tmp_path / "gray3", SHAPES, 20, 4)
    spec = {"name": "shapes", "dataset": "folder", "data_dir": str(root), "methods": ["ebomlc"],
            "options": {**FAST, "epochs": 1, "model": "small_cnn", "gold_fraction": 0.1, "bs": 10}}
    path = run_study(spec, storage=str(tmp_path / "studies"), progress=False)
    (trial,) = trial_dirs(path)
    assert json.loads((trial / "params.json").read_text())["dataset"] == "gray3"
    assert results(trial)[-1]["class_names"] == list(SHAPES)
    written = analysis.analyze(path)
    doc = (path / "analysis" / "rank_table.md").read_text()
    assert "# Final test accuracy on gray3" in doc and "Classes (3): circle, square, triangle." in doc
    assert any(p.name.startswith("label_correction_") for p in written)
    final = analysis.final_results(analysis.load_study(path))
    fig = analysis.plot_label_correction(final, "ebomlc", final["setting"].iloc[0], tmp_path / "lc.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(SHAPES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(SHAPES)


def test_a_trial_of_the_cpu_cifar10_benchmark_and_ebomlc_train_give_identical_metrics(ray_session, tmp_path):
    """``variants_cifar10_cpu.yaml``'s default-EBOMLC case as a study trial and as ``ebomlc train`` with its
    options (on a small CIFAR-10-shaped image folder, capped steps): the same numbers, epoch by epoch."""
    import csv

    import torch

    from ebomlc import TrainConfig
    from ebomlc.data.sources import CIFAR10_CLASSES
    from ebomlc.train import train_run

    from .test_folders import write_folder

    data = write_folder(tmp_path / "cifar", CIFAR10_CLASSES, 50, 5, size=(32, 32), mode="RGB")
    spec = yaml.safe_load((ROOT / "tune" / "studies" / "variants_cifar10_cpu.yaml").read_text())
    (case,) = [c for c in spec["cases"] if c == {"method": "ebomlc", "variant": "paper"}]
    spec.update(name="cpu_bench", data_dir=str(data), methods=["ebomlc"], cases=[case],
                grid={"corruption_level": [0.4], "seed": [1]})
    spec["options"].update(train_subset=500, epochs=2, max_steps_per_epoch=2, eval_subset=50)
    path = run_study(spec, storage=str(tmp_path), progress=False)
    (trial,) = trial_dirs(path)
    params = json.loads((trial / "params.json").read_text())
    assert params["image_size"] == 8 and params["gold_fraction"] == 0.02 and params["threads"] == 1
    before = torch.get_num_threads()
    try:
        summary = train_run(TrainConfig.from_dict(params), tmp_path / "cli", progress=False)
    finally:
        torch.set_num_threads(before)
    trial_rows = results(trial)
    with open(tmp_path / "cli" / "metrics.csv") as f:
        cli_rows = list(csv.DictReader(f))
    assert len(cli_rows) == len(trial_rows) == 2 and summary["final_test_acc"] == trial_rows[-1]["test_acc"]
    timing = {"epoch_time", "train_time", "eval_time"}
    for ours, theirs in zip(cli_rows, trial_rows):
        keys = set(ours) - timing
        assert keys <= set(theirs) and {"test_acc", "lc_acc", "lambda", "upper_loss"} <= keys
        assert all(float(ours[k]) == float(theirs[k]) for k in keys), ours


def test_a_checkpoint_the_state_names_but_a_later_driver_deleted_is_put_back(ray_session, tmp_path):
    from tune.repair import _checkpoint_epoch, _referenced_paths, restore_missing_checkpoints

    spec = {"name": "repair", "dataset": "digits", "methods": ["ce"], "checkpoint": {"every": 1, "keep": 2},
            "options": {**FAST, "epochs": 3, "max_steps_per_epoch": 2}}
    path = Path(run_study(spec, storage=str(tmp_path), progress=False))
    named = _referenced_paths(newest_state(path))
    assert len(named) == 2 and all(p.exists() for p in named)  # keep: 2
    latest = max(named, key=_checkpoint_epoch)
    shutil.rmtree(latest)
    lines = []
    assert restore_missing_checkpoints(path, echo=lines.append) == [latest]
    assert results(trial_dirs(path)[0])[-1]["epoch"] == 3
    assert _checkpoint_epoch(latest) == 2  # the newest checkpoint left, of an epoch result.json records
    assert "restored it as a copy of" in lines[0]
    assert restore_missing_checkpoints(path, echo=lines.append) == []  # nothing else is missing
