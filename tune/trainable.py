"""The Tune function trainable: ``ebomlc.train.Trainer`` epochs, reported and checkpointed.

Each epoch's metrics row goes to ``tune.report``; the full trainer state is checkpointed every
``checkpoint_every`` epochs and at the end, and a restarted trial continues exactly from
``tune.get_checkpoint()``, or from its own checkpoint of the last epoch its ``result.json`` records when
that is later (a killed driver's experiment state can lag its results: see ``own_reported_checkpoint``). The noisy dataset is built once per worker process for each
(dataset, noise, gold fraction, data seed, ...) and shared by the trials that worker runs.
"""
from __future__ import annotations

import functools
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune as ray_tune

from ebomlc.config import TrainConfig
from ebomlc.data import NoisyData
from ebomlc.provenance import flat, provenance
from ebomlc.train import DATA_FIELDS, Trainer, data_key, load_data, resolve_device
from ebomlc.train.checkpoint import load_torch, save_torch
from ebomlc.writes import writing

from .repair import last_recorded_epoch
from .spec import COMMON_METRICS, LABEL_CORRECTION_METRICS, VAL_METRICS

STATE_FILE = "trainer.pt"


def shared_data(config: TrainConfig, device: torch.device) -> NoisyData:
    """The noisy data of a resolved ``config``, memoised per process (trials only read it)."""
    return _noisy_data(str(device), data_key(config))


@functools.lru_cache(maxsize=4)
def _noisy_data(device: str, key: tuple) -> NoisyData:
    """``load_data`` of the data options ``key`` (``data_key``: all that ``load_data`` reads)."""
    return load_data(TrainConfig(**dict(zip(DATA_FIELDS, key))), torch.device(device))


def train_trial(config: dict[str, Any], checkpoint_every: int = 1, record: tuple[str, ...] = ()) -> None:
    """Run one trial: ``config`` holds TrainConfig options (a flat dict, Ray's ``params.json``).

    A trial restored from a checkpoint trains on under ``config``, which PBT may have mutated since the
    checkpoint was written (the donor's options in the checkpoint are not used); ``record`` names options
    whose values in force each epoch reports as ``current_<name>``."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint
    cfg = TrainConfig.from_dict(config).resolved()
    device = resolve_device(cfg.device)
    trainer = Trainer(cfg, data=shared_data(cfg, device), device=device)
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(load_torch(Path(folder) / STATE_FILE))
    if checkpoint is not None and not record:
        later = own_reported_checkpoint(trainer.epoch)
        if later is not None:
            trainer.load_state_dict(later)
    origin = flat(provenance(device))  # of this process: a trial continued elsewhere reports where it went on
    unevaluated = dict.fromkeys(COMMON_METRICS + (VAL_METRICS if cfg.has_validation else ())
                                + (LABEL_CORRECTION_METRICS if trainer.method.corrects_labels else ()), math.nan)
    if trainer.epoch >= cfg.epochs and trainer.history and record:
        # restored at its end by a schedule (PBT continued this trial from a finished donor): report that last
        # epoch as this trial's, so every trial's record ends with its final epoch. Outside schedules a trial
        # restored at its end (its worker killed just after the last report) has reported that epoch already.
        _report(trainer, {**unevaluated, **trainer.values_in_force(record), **trainer.history[-1], **origin}, True)
    while trainer.epoch < cfg.epochs:
        # DivergedError: Tune records the trial as errored. Epochs between evaluations (eval_every)
        # report NaN test metrics: Tune wants the study's metric in every result.
        row = {**unevaluated, **trainer.values_in_force(record), **trainer.run_epoch(), **origin}
        last = trainer.epoch == cfg.epochs
        _report(trainer, row, last, checkpoint=last or trainer.epoch % checkpoint_every == 0)


def own_reported_checkpoint(epoch: int) -> dict | None:
    """The trainer state of this trial's own checkpoint of the last epoch its ``result.json`` records, when
    that epoch is later than ``epoch`` (None otherwise, or when anything is unreadable).

    A driver killed after writing an epoch's result but before saving the experiment state restores the
    trial from an older checkpoint; continuing from the checkpoint of the last recorded epoch instead
    keeps every epoch in ``result.json`` exactly once (each checkpoint is written before its epoch is
    reported). Not for schedules, whose restored checkpoint may be another trial's (PBT).
    """
    import pyarrow.fs

    try:
        storage = ray_tune.get_context().get_storage()
        fs, trial = storage.storage_filesystem, storage.trial_fs_path
        with fs.open_input_stream(f"{trial}/result.json") as f:
            lines = f.read().decode(errors="replace").splitlines()
        last = last_recorded_epoch(lines)
        if last <= epoch:
            return None
        folders = [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(trial))
                   if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_")]
        for folder in folders:  # by content, not name: Tune's numbering restarts from the checkpoint it knew
            try:
                with tempfile.TemporaryDirectory(prefix="ebomlc-restore-") as tmp:
                    with fs.open_input_stream(f"{folder}/{STATE_FILE}") as f, open(Path(tmp) / STATE_FILE, "wb") as g:
                        g.write(f.read())
                    state = load_torch(Path(tmp) / STATE_FILE)
            except Exception:  # noqa: BLE001 - one cut or foreign checkpoint: look at the others
                continue
            if int(state["epoch"]) == last:
                return state
    except Exception:  # noqa: BLE001 - no storage context, a cut file, a foreign checkpoint: Tune's checkpoint
        return None
    return None


def _report(trainer: Trainer, row: dict[str, Any], last: bool, checkpoint: bool = True) -> None:
    """``tune.report`` of an epoch's row (the last with the label-correction matrix and class names),
    with the trainer's state as a checkpoint when ``checkpoint``."""
    if last:
        matrix = trainer.label_correction_matrix()
        if matrix is not None:
            row = {**row, "lc_matrix": matrix.tolist()}
        if trainer.data.class_names is not None:
            row = {**row, "class_names": list(trainer.data.class_names)}
    if not checkpoint:
        ray_tune.report(row)
        return
    study_dir, trial_dir = _study_and_trial_dirs()
    hint = (f"the trial's last good checkpoint is intact: free space and continue the study with "
            f"`ebomlc study resume {study_dir} --retry-errored`")
    with tempfile.TemporaryDirectory(prefix="ebomlc-ckpt-") as folder:
        with writing(Path(folder) / STATE_FILE, hint):
            save_torch(trainer.state_dict(), Path(folder) / STATE_FILE)
        with writing(f"{trial_dir}/checkpoint_* (Ray's copy of {Path(folder) / STATE_FILE})", hint):
            ray_tune.report(row, checkpoint=ray_tune.Checkpoint.from_directory(folder))


def _study_and_trial_dirs() -> tuple[str, str]:
    """Where this trial's study and trial directory are in the study's storage (``s3://...`` for cloud)."""
    try:
        storage = ray_tune.get_context().get_storage()
        kind = storage.storage_filesystem.type_name
        study = ("" if kind == "local" else f"{kind}://") + f"{storage.storage_fs_path}/{storage.experiment_dir_name}"
        return study, f"{study}/{storage.trial_dir_name}"
    except Exception:  # noqa: BLE001 - outside a Tune session (a test calling _report)
        return "STUDY_DIR", "TRIAL_DIR"
