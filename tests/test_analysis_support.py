"""Synthetic study directories for the analysis tests (helpers only; no tests here).

The layout is the ``tune/`` layer's: ``<study>/study.yaml`` and one trial directory per trial
with ``params.json`` and ``result.json`` (one JSON line per epoch, Ray's keys included).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

EPOCHS = 3
SEEDS = (1, 2)
SETTINGS = (("unif", 0.0), ("unif", 0.4), ("flip", 0.2))
LABELS = ("uniform-0%", "uniform-40%", "flip-20%")
#: Final test accuracy per (method, setting label): one value per seed (1, 2).
FINAL = {
    ("ce", "uniform-0%"): (0.90, 0.92), ("ce", "uniform-40%"): (0.70, 0.74), ("ce", "flip-20%"): (0.80, 0.80),
    ("mlc", "uniform-0%"): (0.91, 0.93), ("mlc", "uniform-40%"): (0.75, 0.77), ("mlc", "flip-20%"): (0.81, 0.83),
    ("ebomlc", "uniform-0%"): (0.92, 0.92), ("ebomlc", "uniform-40%"): (0.78, 0.80),
    ("ebomlc", "flip-20%"): (0.83, 0.83),
}
EPOCH_TIME = {"ce": 1.0, "mlc": 2.0, "ebomlc": 1.5, "mlcbome": 4.0}
LC_MATRIX = [[8, 1, 1], [0, 9, 1], [2, 0, 8]]


def label(ctype: str, level: float) -> str:
    return LABELS[SETTINGS.index((ctype, level))]


def params(method: str, ctype: str, level: float, seed: int, **extra) -> dict:
    """A trial's params.json: TrainConfig fields, barrier knobs None (= preset) unless given."""
    p = {"method": method, "dataset": "digits", "corruption_type": ctype, "corruption_level": level,
         "gold_fraction": 0.05, "seed": seed, "epochs": EPOCHS, "main_lr": 0.1, "meta_lr": 3e-4,
         "rho": None, "delta": None, "xi": None, "inner_steps": None, "grad_q_w": None, "variant": "paper",
         "lr_milestones": None, "extra": {}, "max_steps_per_epoch": 3}
    p.update(extra)
    return p


def epoch_lines(method: str, final: float, reported: int = EPOCHS, trial_id: str = "t") -> list[dict]:
    """Result lines: test accuracy rising by 0.05 per epoch to ``final`` at epoch ``EPOCHS``."""
    lines = []
    for e in range(1, reported + 1):
        row = {"epoch": e, "test_acc": final - 0.05 * (EPOCHS - e), "test_loss": 1.0 / e,
               "epoch_time": EPOCH_TIME[method], "train_time": EPOCH_TIME[method] * e,
               "trial_id": trial_id, "training_iteration": e, "time_total_s": 1.1 * e, "done": False,
               "config": {"method": method}, "timestamp": 1700000000 + e}
        if method == "ce":
            row["train_loss"] = 2.0 / e
        else:
            row.update(upper_loss=1.5 / e, lower_loss=2.5 / e, lc_acc=0.8, lc_acc_clean=0.9,
                       lc_acc_corrupted=0.5, value_gap=0.1, **{"lambda": 0.3})
            if e == EPOCHS:
                row["lc_matrix"] = LC_MATRIX
        lines.append(row)
    return lines


def write_trial(study: Path, name: str, trial_params: dict, lines: list[dict] | None,
                error: bool = False, raw_tail: str = "") -> Path:
    """One trial directory; ``lines=None`` leaves out result.json, ``raw_tail`` appends raw text."""
    d = study / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(trial_params))
    if lines is not None:
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines) + raw_tail)
    if error:
        (d / "error.txt").write_text("Traceback ...\nRuntimeError: boom\n")
    return d


def write_study(root: Path, name: str = "synth", methods=("ce", "mlc", "ebomlc"), skip=()) -> Path:
    """The full grid methods x SETTINGS x SEEDS with the numbers of FINAL; ``skip`` holds
    ``(method, label, seed)`` trials to leave out."""
    study = root / name
    study.mkdir(parents=True)
    (study / "study.yaml").write_text(yaml.safe_dump({"name": name, "dataset": "digits"}))
    for method in methods:
        for ctype, level in SETTINGS:
            for i, seed in enumerate(SEEDS):
                if (method, label(ctype, level), seed) in skip:
                    continue
                tid = f"{method}_{ctype}{level}_{seed}"
                write_trial(study, f"train_{tid}", params(method, ctype, level, seed),
                            epoch_lines(method, FINAL[(method, label(ctype, level))][i], trial_id=tid))
    return study


def write_sweep_study(root: Path, name: str = "sweep", rhos=(None, 0.5, 1.0), ks=(1, 3),
                      settings=SETTINGS[1:]) -> Path:
    """EBOMLC with rho in ``rhos`` (None = the preset 0.2) and K in ``ks`` at ``settings``, seeds 1
    and 2; final accuracy = 0.7 + 0.1 * rho - 0.01 * K + 0.001 * seed."""
    study = root / name
    study.mkdir(parents=True)
    (study / "study.yaml").write_text(yaml.safe_dump({"name": name, "dataset": "digits"}))
    for rho in rhos:
        for k in ks:
            for ctype, level in settings:
                for seed in SEEDS:
                    acc = 0.7 + 0.1 * (rho or 0.2) - 0.01 * k + 0.001 * seed
                    tid = f"rho{rho}_K{k}_{ctype}{level}_{seed}"
                    write_trial(study, f"train_{tid}", params("ebomlc", ctype, level, seed, rho=rho, inner_steps=k),
                                epoch_lines("ebomlc", acc, trial_id=tid))
    return study
