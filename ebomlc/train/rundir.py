"""A run directory: ``config.json``, ``metrics.csv``, ``summary.json``, ``checkpoint.pt`` and, for
meta methods, ``label_correction.csv`` (the K x K [true, corrected] matrix at the end).

Every file is written atomically after each epoch, so a crash leaves a resumable run.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import EbomlcError
from ..progress import Progress
from .checkpoint import load_torch, save_json, save_text, save_torch
from .loop import Trainer, resolve_device

CHECKPOINT = "checkpoint.pt"


def metrics_csv(history: list[dict]) -> str:
    """Rows of per-epoch metrics as CSV text (columns: union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def check_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run, or to resume one that has no checkpoint."""
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise EbomlcError(f"cannot resume: {out / CHECKPOINT} does not exist (drop --resume to start afresh)")
    elif out.exists() and any(out.iterdir()):
        raise EbomlcError(f"run directory {out} already exists; pass --resume to continue it, "
                          f"or choose another --out/--runid")


def train_run(config: TrainConfig, out: str | Path | None = None, resume: bool = False,
              progress: bool = True, epochs: int | None = None) -> dict:
    """Train ``config`` into run directory ``out`` (default ``runs/<runid>``); return the summary.

    With ``resume`` the run continues from its checkpoint under its saved configuration
    (``epochs`` may extend it). All input is validated and the data loaded before anything is written.
    """
    out = Path(out) if out is not None else Path("runs") / config.runid
    check_run_dir(out, resume)
    state = None
    if resume:
        state = load_torch(out / CHECKPOINT)
        config = TrainConfig.from_dict(state["config"])
    if epochs is not None:
        config.epochs = epochs
    config = config.resolved()
    trainer = Trainer(config, device=resolve_device(config.device))
    if state is not None:
        trainer.load_state_dict(state)
    out.mkdir(parents=True, exist_ok=True)
    save_json({**config.to_dict(), "data": trainer.data.summary()}, out / "config.json")
    bar = Progress(config.runid, config.epochs, enabled=progress)
    bar.note(describe_data(trainer))
    while trainer.epoch < config.epochs:
        row = trainer.run_epoch(on_step=lambda i, n: bar.step(trainer.epoch + 1, i, n))
        save_text(metrics_csv(trainer.history), out / "metrics.csv")
        save_torch(trainer.state_dict(), out / CHECKPOINT)
        bar.epoch(row)
    summary = trainer.summary()
    matrix = trainer.label_correction_matrix()
    if matrix is not None:
        np.savetxt(out / "label_correction.csv", matrix, fmt="%d", delimiter=",")
        summary["label_correction_acc"] = float(np.trace(matrix) / matrix.sum())
    save_json(summary, out / "summary.json")
    return summary


def describe_data(trainer: Trainer) -> str:
    """One line on what a run trains on: data, model and the realised noise."""
    d, c = trainer.data, trainer.config
    size = f"{d.in_channels}x{d.image_size}x{d.image_size}"
    text = (f"{c.method} on {d.name} ({d.num_classes} classes, {size}, model {type(trainer.model).__name__}): "
            f"{len(d.silver_index)} silver, {len(d.gold_index)} gold, {int(d.y_test.numel())} test images")
    if d.label_source == "synthetic":
        text += f"; {c.corruption_type} noise at level {c.corruption_level:g}"
    else:
        text += f"; labels from {c.noise_file or c.noisy_labels}" + (f" ({c.noise_key})" if c.noise_key else "")
        if d.file_noise_rate is not None:
            text += f", noise rate {d.file_noise_rate:.2%} over the whole file"
    rate = d.realised_noise_rate()
    return text + (f", realised {rate:.2%} on silver" if rate is not None else ", true labels unknown")


def read_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())
