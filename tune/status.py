"""``study_status``: one row per trial of a study directory (state, epoch, latest metric), with the
study's planned trial count and an ETA, correct while the study runs.

Tune's saved experiment state (``experiment_state-*.json``) is a snapshot taken every few seconds,
and reading it back through ``ExperimentAnalysis`` turns RUNNING trials into PENDING. So the
state is read raw, and each trial's own files (``result.json`` rows) count wherever they are
newer; whether a driver is still running comes from the heartbeat it writes (``HEARTBEAT_FILE``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ebomlc.errors import EbomlcError

from . import storage
from .spec import StudySpec, load_spec, parse_yaml
from .storage import HEARTBEAT_FILE, SPEC_FILE

_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)\w*)(:.*)?$")
_STATE_FILE = re.compile(r"^experiment_state-.*\.json$")
#: A driver writes its heartbeat this often (seconds); one silent for 3 beats and more is gone.
HEARTBEAT_S = 10.0
#: Trial states: Tune's, and INTERRUPTED: unfinished while no driver runs (``study resume`` continues it).
FINAL = ("TERMINATED", "ERROR")
INTERRUPTED = "INTERRUPTED"

log = logging.getLogger(__name__)


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
    text = storage.read_text_if_exists(file)
    if text is None:
        return None
    return load_spec(parse_yaml(text, file), check_trials=False)


# ------------------------------------------------------------------------------ driver heartbeat
def heartbeat_text(every: float = HEARTBEAT_S) -> str:
    """What a running driver writes to ``HEARTBEAT_FILE``: who it is and when it last wrote."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "every": every})


def running_driver(location: str) -> dict[str, Any] | None:
    """The heartbeat of the driver running the study at ``location``, or None if none runs: the
    heartbeat is missing (removed at the end of a run), older than three beats (a killed driver
    or a lost head node) or names a process of this host that no longer exists."""
    text = storage.read_text_if_exists(storage.join(location, HEARTBEAT_FILE))
    try:
        beat = json.loads(text) if text else None
        age = time.time() - float(beat["time"])
        every = float(beat.get("every", HEARTBEAT_S))
    except (ValueError, TypeError, KeyError):
        return None
    if age > 3 * every + 15:
        return None
    if beat.get("host") == socket.gethostname() and not _process_exists(beat.get("pid")):
        return None
    return {**beat, "age_s": max(age, 0.0)}


def _process_exists(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (TypeError, ValueError, OSError):
        return False
    return True


# ------------------------------------------------------------------------------ status
@dataclass
class _Trial:
    """What is known of one trial: from Tune's saved state (``status``...) and its directory."""

    name: str
    status: str | None = None  # Tune's, None where the saved state does not know the trial yet
    config: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    state_result: dict[str, Any] = field(default_factory=dict)  # the state's last_result
    rows: list[dict[str, Any]] = field(default_factory=list)  # result.json
    has_dir: bool = False


def study_status(path: str | Path) -> pd.DataFrame:
    """A table of the study's trials: ``trial``, ``state``, ``epoch``, the study's metric, the swept
    options, ``failures`` and, for errored trials, ``error`` (the exception's last line).

    ``state`` is TERMINATED, ERROR, RUNNING, PENDING (waiting for resources) or PAUSED while a
    driver runs the study; a trial unfinished while no driver runs is INTERRUPTED (``study resume``
    continues it from its last checkpoint). ``attrs`` hold ``study``, ``path``, ``metric``,
    ``planned`` (the trials the saved spec plans; None without one), ``not_created`` (planned trials
    Tune has not created yet), ``driver`` (the running driver's heartbeat, or None) and ``eta_s``
    (seconds left: remaining epochs x mean seconds per reported epoch / trials running; None while
    unknown: nothing reported yet, or no trial running).
    """
    location = storage.resolve(path)
    require_study(location)
    spec = read_study_spec(location)
    metric = spec.metric if spec else "test_acc"
    swept = spec.swept_keys() if spec else []
    driver = running_driver(location)
    trials = _trials(location)
    epochs_default = spec.epochs if spec else None

    rows, remaining, seconds = [], 0, []
    for trial in trials:
        state_epoch = _int(trial.state_result.get("epoch")) or 0
        file_epoch = max((_int(r.get("epoch")) or 0 for r in trial.rows), default=0)
        reported = max(state_epoch, file_epoch)
        target = _int(trial.config.get("epochs")) or epochs_default
        state = _state(trial.status, state_epoch, file_epoch, target, driver is not None)
        if state not in FINAL and target:
            remaining += max(0, target - reported)
        seconds += [r["time_this_iter_s"] for r in trial.rows if _finite(r.get("time_this_iter_s"))]
        row = {"trial": trial.name, "state": state, "epoch": reported or None, metric: _last_value(trial, metric)}
        row.update({key: trial.config.get(key) for key in swept})
        row["failures"] = trial.failures
        row["error"] = _error(storage.join(location, trial.name)) if state == "ERROR" else ""
        rows.append(row)
    columns = ["trial", "state", "epoch", metric, *swept, "failures", "error"]
    frame = pd.DataFrame(rows, columns=columns).astype({"epoch": "Int64"})

    planned = spec.planned_epochs() if spec else None
    not_created = max(0, len(planned) - len(trials)) if planned is not None else 0
    if planned is not None:
        remaining += sum(planned[len(trials):])  # Tune creates a grid's trials in the spec's order
    running = int((frame["state"] == "RUNNING").sum())
    if remaining == 0:
        eta = 0.0
    elif seconds and running:
        eta = remaining * (sum(seconds) / len(seconds)) / running
    else:
        eta = None
    frame.attrs.update(metric=metric, path=location, study=spec.name if spec else Path(location).name,
                       planned=len(planned) if planned is not None else None, not_created=not_created,
                       driver=driver, eta_s=eta, remaining_epochs=remaining)
    return frame


def _state(status: str | None, state_epoch: int, file_epoch: int, target: int | None, driver: bool) -> str:
    """A trial's state from Tune's (possibly stale) saved status, the epochs the saved state and the
    trial's ``result.json`` know, its ``epochs`` and whether a driver runs."""
    stale = file_epoch > state_epoch  # the trial reported since the state was saved
    if status in FINAL and not stale:
        return status
    if target and max(state_epoch, file_epoch) >= target:
        return "TERMINATED"
    if not driver:
        return INTERRUPTED
    if status in ("PENDING", "PAUSED") and not stale:
        return status
    return "RUNNING"


def _trials(location: str) -> list[_Trial]:
    """Every trial of the study: those of Tune's newest saved state in its order, then trial
    directories the state does not know yet (created since it was saved)."""
    entries = storage.listdir(location)
    trials: dict[str, _Trial] = {}
    states = sorted(name for name, is_dir in entries.items() if not is_dir and _STATE_FILE.match(name))
    if states:
        for trial_json, meta_json in _read_state(storage.join(location, states[-1])):
            try:
                t, meta = json.loads(trial_json), json.loads(meta_json)
            except (TypeError, ValueError):
                continue
            name = t.get("relative_logdir") or t.get("trial_id") or f"trial_{len(trials)}"
            config = t.get("config") if isinstance(t.get("config"), dict) else {}
            last = meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {}
            trials[name] = _Trial(name=name, status=t.get("status"), config=config,
                                  failures=_int(meta.get("num_failures")) or 0, state_result=last)
    for name in sorted(n for n, is_dir in entries.items() if is_dir):
        if name in trials:
            trial = trials[name]
        else:
            files = storage.listdir(storage.join(location, name))
            if not ("params.json" in files or "result.json" in files or any(f.startswith("checkpoint_")
                                                                              for f in files)):
                continue  # not a trial directory
            trial = trials[name] = _Trial(name=name)
        trial.has_dir = True
        if not trial.config:
            trial.config = _json(storage.read_text_if_exists(storage.join(location, name, "params.json"))) or {}
        trial.rows = _result_rows(storage.read_text_if_exists(storage.join(location, name, "result.json")))
    return list(trials.values())


def _read_state(file: str) -> list:
    """The ``trial_data`` of an experiment state file; [] if it cannot be read (being replaced)."""
    for attempt in range(3):
        state = _json(storage.read_text_if_exists(file))
        if isinstance(state, dict) and isinstance(state.get("trial_data"), list):
            return state["trial_data"]
        time.sleep(0.1 * (attempt + 1))
    log.warning("could not read %s; trial states come from their directories only", file)
    return []


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _result_rows(text: str | None) -> list[dict[str, Any]]:
    """``result.json`` rows (one per reported epoch); a line being written is skipped."""
    rows = []
    for line in (text or "").splitlines():
        row = _json(line) if line.strip() else None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _last_value(trial: _Trial, metric: str) -> float | None:
    """The latest finite ``metric`` of the trial (epochs between evaluations report NaN)."""
    for row in reversed(trial.rows):
        if _finite(row.get(metric)):
            return float(row[metric])
    value = trial.state_result.get(metric)
    return float(value) if _finite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(trial_path: str) -> str:
    """The last ``SomeError: message`` line of the trial's ``error.txt``."""
    text = storage.read_text_if_exists(storage.join(trial_path, "error.txt"))
    lines = [line for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match:
            return (match.group(1) + (match.group(2) or "")).strip()
    return lines[-1].strip() if lines else ""
