"""``study_status``: one row per trial of a study directory (state, epoch, latest metric)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from ebomlc.errors import EbomlcError

from . import storage
from .spec import StudySpec, load_spec
from .storage import SPEC_FILE

_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)\w*)(:.*)?$")


def has_study(location: str) -> bool:
    """Whether ``location`` holds a Tune experiment (its ``tuner.pkl``)."""
    return storage.exists(storage.join(location, "tuner.pkl"))


def require_study(location: str) -> None:
    """Raise ``EbomlcError`` unless ``location`` holds a Tune experiment."""
    if not has_study(location):
        raise EbomlcError(f"no study in {location} (no tuner.pkl); give the directory <storage>/<name> "
                          f"that `ebomlc study run` printed")


def read_study_spec(location: str) -> StudySpec | None:
    """The ``study.yaml`` saved in an experiment directory, or None if there is none.

    Its trials are not resolved again: their label-file paths are relative to where the study
    was run, and the trials hold them resolved already.
    """
    file = storage.join(location, SPEC_FILE)
    if not storage.exists(file):
        return None
    import yaml

    return load_spec(yaml.safe_load(storage.read_text(file)), check_trials=False)


def study_status(path: str | Path) -> pd.DataFrame:
    """A table of the study's trials: ``trial``, ``state``, ``epoch``, the study's metric, the swept
    options, ``failures`` and, for errored trials, ``error`` (the exception's last line).

    ``state`` is Ray's (TERMINATED, ERROR, RUNNING, PENDING, PAUSED); a trial still RUNNING or
    PENDING in a study whose driver is gone was interrupted and continues on ``study resume``.
    """
    from ray.tune import ExperimentAnalysis

    location = storage.resolve(path)
    require_study(location)
    spec = read_study_spec(location)
    metric = spec.metric if spec else "test_acc"
    swept = spec.swept_keys() if spec else []
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")  # trials without results yet are fine
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        analysis = ExperimentAnalysis(location)
        frames = analysis.trial_dataframes
    finally:
        quiet.setLevel(level)
    rows = []
    for trial in analysis.trials:
        last = dict(trial.last_result or {})
        frame = frames.get(trial.path)
        if frame is not None and len(frame):
            last.update(frame.iloc[-1].dropna().to_dict())  # result files are fresher than the state
        row = {"trial": trial.storage.trial_dir_name if trial.storage else trial.trial_id,
               "state": trial.status, "epoch": _int(last.get("epoch")), metric: last.get(metric)}
        row.update({key: trial.config.get(key) for key in swept})
        row["failures"] = trial.run_metadata.num_failures
        row["error"] = _error(trial.path) if trial.status == "ERROR" else ""
        rows.append(row)
    columns = ["trial", "state", "epoch", metric, *swept, "failures", "error"]
    frame = pd.DataFrame(rows, columns=columns).astype({"epoch": "Int64"})
    frame.attrs.update(metric=metric, path=location, study=spec.name if spec else Path(location).name)
    return frame


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(trial_path: str) -> str:
    """The last ``SomeError: message`` line of the trial's ``error.txt``."""
    file = storage.join(trial_path, "error.txt")
    if not storage.exists(file):
        return ""
    lines = [line for line in storage.read_text(file).splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match:
            return (match.group(1) + (match.group(2) or "")).strip()
    return lines[-1].strip() if lines else ""
