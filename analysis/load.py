"""Read a study directory into one tidy DataFrame: one row per trial x reported epoch.

A study directory is a Ray Tune experiment directory ``<storage>/<name>/`` holding ``study.yaml``
and one sub-directory per trial; a trial directory is any sub-directory with ``params.json``
(the trial's flat TrainConfig options) and, once it has reported, ``result.json`` (one JSON
object per epoch). Running, stopped and errored trials load as far as they got.
"""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ebomlc.config import fill_presets
from ebomlc.errors import EbomlcError
from ebomlc.writes import save_bytes
from tune.storage import SPEC_FILE

PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILES = ("error.txt", "error.pkl")
#: Keys every trial needs (``dataset`` may come from ``study.yaml``).
REQUIRED_KEYS = ("method", "dataset")

#: ``status`` values: all epochs reported; some epochs (running or stopped); raised an error; none yet.
STATUSES = ("finished", "unfinished", "errored", "pending")
#: Columns that describe the trial rather than an epoch, first in the frame.
TRIAL_COLUMNS = ["trial_id", "trial_dir", "status", "finished", "setting", "unreadable_lines"]
NOISE_NAMES = {"unif": "uniform", "flip": "flip", "asym": "asym", "instance": "instance"}


def setting_label(corruption_type: Any, corruption_level: Any) -> str:
    """``("unif", 0.4) -> "uniform-40%"``, ``("flip", 0.2) -> "flip-20%"`` (the paper's column names)."""
    name = NOISE_NAMES.get(str(corruption_type), str(corruption_type))
    try:
        percent = round(float(corruption_level) * 100, 6)
    except (TypeError, ValueError):
        return f"{name}-{corruption_level}"
    return f"{name}-{percent:g}%"


def setting_order(label: str) -> tuple:
    """Sort key for setting labels: uniform before flip, then by level."""
    name, _, level = label.rpartition("-")
    kinds = list(NOISE_NAMES.values())
    try:
        number = float(level.rstrip("%"))
    except ValueError:
        number = math.inf
    return (kinds.index(name) if name in kinds else len(kinds), name, number, label)


def read_spec_dict(path: str | Path) -> dict[str, Any]:
    """The study's ``study.yaml`` as a dict (empty when the file is absent)."""
    file = Path(path) / SPEC_FILE
    if not file.is_file():
        return {}
    try:
        spec = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise EbomlcError(f"cannot read {file}: {exc}".splitlines()[0]) from exc
    return spec if isinstance(spec, dict) else {}


def find_trial_dirs(path: str | Path) -> list[Path]:
    """Trial directories of a study (sub-directories with ``params.json``), or ``[path]`` for one trial."""
    path = Path(path)
    if (path / PARAMS_FILE).is_file():
        return [path]
    return sorted(p.parent for p in path.glob(f"*/{PARAMS_FILE}") if p.is_file())


def read_results(file: Path) -> tuple[list[dict[str, Any]], int]:
    """Epoch rows of a ``result.json`` and the number of unreadable lines (e.g. one being written)."""
    if not file.is_file():
        return [], 0
    rows, bad = [], 0
    for line in file.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


#: Reported values that are lists: the last epoch's label-correction matrix and the dataset's class names.
LIST_METRICS = ("lc_matrix", "class_names")


def _epoch_rows(results: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Scalar metrics (plus ``LIST_METRICS``) per epoch; a re-reported epoch keeps its last line."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    for i, result in enumerate(results):
        row = {}
        for key, value in result.items():
            if key in params:
                continue
            if key in LIST_METRICS or value is None or isinstance(value, (bool, int, float, str)):
                row[key] = value
        row["epoch"] = _as_int(row.get("epoch"), _as_int(row.get("training_iteration"), i + 1))
        by_epoch[row["epoch"]] = row
    return sorted(by_epoch.values(), key=lambda r: r["epoch"])


def _status(rows: list[dict[str, Any]], epochs: Any, errored: bool) -> str:
    """One of ``STATUSES``."""
    if not rows:
        return "errored" if errored else "pending"
    try:
        finished = int(rows[-1]["epoch"]) >= int(epochs)
    except (TypeError, ValueError):  # no usable `epochs`: trust the absence of an error
        finished = not errored
    if finished:
        return "finished"
    return "errored" if errored else "unfinished"


def _trial_id_from_name(name: str) -> str:
    """Ray's trial id in a trial directory name: ``train_0e188_00002_2_method=mlc_...`` -> ``0e188_00002``,
    ``ce_seed=1_b861f1b2`` -> ``b861f1b2``; else the name itself."""
    match = re.search(r"(?:^|_)([0-9a-f]{5}_\d{5})(?=_|$)", name) or re.search(r"_([0-9a-f]{8})$", name)
    return match.group(1) if match else name


def _read_trial(trial_dir: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config (presets filled) and the records (one per epoch, or one empty) of a trial directory."""
    try:
        params = json.loads((trial_dir / PARAMS_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EbomlcError(f"cannot read {trial_dir / PARAMS_FILE}: {exc}") from exc
    if not isinstance(params, dict):
        raise EbomlcError(f"{trial_dir / PARAMS_FILE} is not a JSON object")
    if params.get("dataset") is None and spec.get("dataset"):
        params["dataset"] = spec["dataset"]
    for key in REQUIRED_KEYS:
        if params.get(key) is None:
            raise EbomlcError(f"{trial_dir / PARAMS_FILE} has no {key!r}")
    params = fill_presets(params)  # None knobs take the method's preset, so equal configs compare equal
    results, bad = read_results(trial_dir / RESULT_FILE)
    rows = _epoch_rows(results, params)
    errored = any((trial_dir / name).exists() for name in ERROR_FILES)
    status = _status(rows, params.get("epochs"), errored)
    trial_id = next((r["trial_id"] for r in rows if r.get("trial_id")), None) or _trial_id_from_name(trial_dir.name)
    meta = {"trial_id": trial_id, "trial_dir": trial_dir.name, "status": status, "finished": status == "finished",
            "setting": setting_label(params.get("corruption_type"), params.get("corruption_level")),
            "unreadable_lines": bad}
    records = [{**params, **row, **meta} for row in (rows or [{"epoch": None}])]
    return params, records


def load_study(path: str | Path) -> pd.DataFrame:
    """Every trial's config and per-epoch metrics of the study at ``path``, as one tidy frame.

    One row per trial x reported epoch (a trial that has reported nothing has one row with
    empty metrics). Columns: ``trial_id, trial_dir, status`` (one of ``STATUSES``), ``finished``
    (last epoch == ``epochs``), ``setting`` (``uniform-40%``), ``unreadable_lines`` (of its
    result.json); then the trial's config (``params.json``, ``None`` knobs filled with the
    method's preset); then the metrics of ``result.json`` (scalars, plus ``lc_matrix`` as lists).
    ``df.attrs`` holds ``study`` (the ``study.yaml`` dict), ``path`` and ``config_columns``.
    """
    path = Path(path)
    if not path.is_dir():
        reason = "is not a directory" if path.exists() else "does not exist"
        raise EbomlcError(f"study directory {path} {reason}")
    spec = read_spec_dict(path)
    trial_dirs = find_trial_dirs(path)
    if not trial_dirs:
        raise EbomlcError(f"no trials in {path}: expected sub-directories with {PARAMS_FILE} "
                          f"(pass the study directory <storage>/<name>)")
    records: list[dict[str, Any]] = []
    config_columns: list[str] = []
    for trial_dir in trial_dirs:
        params, trial = _read_trial(trial_dir, spec)
        config_columns += [k for k in params if k not in config_columns and k not in TRIAL_COLUMNS]
        records += trial
    df = pd.DataFrame.from_records(records)
    metric_columns = [c for c in df.columns if c not in TRIAL_COLUMNS and c not in config_columns]
    df = df[TRIAL_COLUMNS + config_columns + metric_columns]
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce").astype("Int64")
    df = df.sort_values(["trial_dir", "epoch"], kind="stable", na_position="first").reset_index(drop=True)
    df.attrs.update(study=spec, path=str(path), config_columns=config_columns)
    return df


def save_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as Parquet; nested values (``lc_matrix``, lists, dicts) become JSON strings."""
    path = Path(path)
    out = df.copy()
    out.attrs = {}
    for column in out.columns:
        if out[column].dtype != object:
            continue
        values = out[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict, tuple)) else v)
        kinds = {type(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds - {int, float}) > 0 and len(kinds) > 1:  # mixed types: write as text
            values = values.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        out[column] = values
    buffer = io.BytesIO()
    out.to_parquet(buffer, index=False)
    save_bytes(buffer.getvalue(), path)  # atomic; a full disk is one StorageError line naming the file
    return path
