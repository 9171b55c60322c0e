"""Checkpoints a killed driver's experiment state still names but a later driver deleted.

Tune keeps a trial's newest ``keep`` checkpoints and writes its experiment state every few seconds. A
trial restored from an old checkpoint numbers its new ones from there and retention deletes the old one;
if that driver is killed before its state is saved, the state on disk names a checkpoint that is gone, and
Tune's restore of the trial fails ("does not exist on storage anymore"). Before a resume,
:func:`restore_missing_checkpoints` puts back each such folder as a copy of the trial's newest checkpoint
whose epoch its ``result.json`` records: the trainable identifies checkpoints by their content and
continues from the last recorded epoch, so every epoch stays in ``result.json`` exactly once.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


def newest_state(study: str | Path) -> Path | None:
    """The newest ``experiment_state-<time>.json`` of a local study directory (None if it has none)."""
    root = Path(study)
    return max(root.glob("experiment_state-*.json"), default=None) if root.is_dir() else None


def checkpoint_managers(state_file: Path) -> Iterator[tuple[dict, Any]]:
    """(trial, checkpoint manager) for each trial of an experiment state: the checkpoints Tune will restore
    from. (A trial's ``last_result`` can already name a checkpoint that its manager does not record yet: Tune
    registers a checkpoint in a later event than the result that carries it, and a state saved in between
    restarts that trial from scratch.)"""
    for entry in json.loads(Path(state_file).read_text()).get("trial_data", []):
        blob = json.loads(entry[1]).get("checkpoint_manager", {})
        if blob.get("_type") == "CLOUDPICKLE_FALLBACK":
            yield json.loads(entry[0]), pickle.loads(bytes.fromhex(blob["value"]))  # Tune's own state


def _referenced_paths(state_file: Path) -> list[Path]:
    """Every checkpoint folder the trials of an experiment state name (the latest and the retained)."""
    paths: dict[str, None] = {}  # in order, once each
    for _, manager in checkpoint_managers(state_file):
        results = list(getattr(manager, "_checkpoint_results", []) or [])
        latest = getattr(manager, "latest_checkpoint_result", None)
        for result in [*results, latest]:
            checkpoint = getattr(result, "checkpoint", None)
            if checkpoint is not None:
                paths.setdefault(checkpoint.path)
    return [Path(p) for p in paths]


def last_recorded_epoch(lines: Iterable[str]) -> int:
    """The largest ``epoch`` of the rows of a ``result.json`` (0 for none; unreadable lines are skipped)."""
    epochs = []
    for line in lines:
        try:
            epochs.append(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return max(epochs, default=0)


def _recorded_epoch(trial: Path) -> int:
    file = trial / "result.json"
    return last_recorded_epoch(file.read_text(errors="replace").splitlines() if file.exists() else [])


def _checkpoint_epoch(folder: Path) -> int | None:
    from ebomlc.train.checkpoint import load_torch

    from .trainable import STATE_FILE  # late: the trainable imports Ray

    try:
        return int(load_torch(folder / STATE_FILE)["epoch"])
    except Exception:  # noqa: BLE001 - a half-written or foreign folder is not a candidate
        return None


def restore_missing_checkpoints(location: str | Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Put back the checkpoint folders the newest experiment state of a local study names but that are gone
    (see the module docstring); return the folders restored. Cloud storage and studies without a state are
    left alone."""
    state = newest_state(location)
    if state is None:
        return []
    restored = []
    for missing in _referenced_paths(state):
        trial = missing.parent
        if missing.exists() or not trial.is_dir():
            continue
        recorded = _recorded_epoch(trial)
        candidates = [(epoch, folder) for folder in trial.glob("checkpoint_*")
                      if (epoch := _checkpoint_epoch(folder)) is not None and epoch <= recorded]
        if not candidates:
            continue
        epoch, source = max(candidates)
        shutil.copytree(source, missing)
        restored.append(missing)
        echo(f"{trial.name}: {missing.name} was deleted after the last saved state; restored it as a copy of "
             f"{source.name} (epoch {epoch}, the last epoch result.json records: {recorded})")
    return restored
