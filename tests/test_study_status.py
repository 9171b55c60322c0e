"""``ebomlc study status`` while a study runs: trial states from the raw experiment state, the
trials' own files and the driver's heartbeat; the planned trial count, the trials not created yet
and an ETA. The live study runs in a thread with a trainable that only sleeps (no CPU load), so a
trial is RUNNING long enough to be seen on a slow, shared machine."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ebomlc.cli import main
from ebomlc.errors import EbomlcError
from tune.launch import resume_study, run_study, study_status
from tune.spec import load_spec
from tune.status import _state, running_driver
from tune.storage import HEARTBEAT_FILE

FAST = {"gold_fraction": 0.05, "device": "cpu", "max_steps_per_epoch": 2}
EPOCHS = 5
SLOW = {"name": "slow", "dataset": "digits", "methods": ["ce"], "grid": {"seed": [1, 2, 3]},
        "options": {**FAST, "epochs": EPOCHS}, "max_concurrent": 1}  # one trial at a time: the others wait


def _sleeping_trainable(seconds: float):
    """A trainable reporting ``epochs`` epochs, each after ``seconds`` of sleep (defined in a function,
    so Ray pickles it by value for its workers)."""

    def trial(config):
        import time

        from ray import tune

        for epoch in range(1, config["epochs"] + 1):
            time.sleep(seconds)
            tune.report({"epoch": epoch, "test_acc": epoch / 10, "test_loss": 1.0 / epoch})

    return trial


def _poll(path: Path, ready, timeout: float = 240):
    """``study_status(path)`` once ``ready(table)`` holds (the study may not exist at first)."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "the study never reached the awaited state"
        if (path / "tuner.pkl").exists():
            table = study_status(path)
            if ready(table):
                return table
        time.sleep(0.2)


def _copy(source: Path, target: Path) -> None:
    """Copy a study directory that Tune is writing (a file may vanish while being copied: retry)."""
    for attempt in range(10):
        shutil.rmtree(target, ignore_errors=True)
        try:
            shutil.copytree(source, target)
            return
        except (shutil.Error, OSError):
            time.sleep(0.1)
    raise AssertionError(f"could not copy {source}")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_status_of_a_running_study_shows_running_pending_and_planned_trials(ray_session, tmp_path, monkeypatch,
                                                                          capsys):
    from ray import tune as ray_tune

    from tune import launch

    monkeypatch.setattr(launch, "_trainable", lambda study: ray_tune.with_resources(_sleeping_trainable(1.5),
                                                                                    {"cpu": 1}))
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")  # experiment snapshots every second
    errors = []

    def driver():
        try:
            run_study(SLOW, storage=str(tmp_path), progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test below
            errors.append(exc)

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    path = tmp_path / "slow"
    try:
        table = _poll(path, lambda t: t.attrs["not_created"] >= 1
                      and ((t["state"] == "RUNNING") & (t["epoch"] >= 1) & (t["epoch"] <= EPOCHS - 2)).any())
        snapshot = tmp_path / "snapshot" / "slow"  # the study as a killed driver would leave it
        _copy(path, snapshot)
        assert table.attrs["planned"] == 3
        assert table.attrs["not_created"] >= 1 and len(table) + table.attrs["not_created"] == 3
        running = table[table["state"] == "RUNNING"]
        assert len(running) == 1 and 1 <= running["epoch"].iloc[0] < EPOCHS
        assert set(table["state"]) <= {"RUNNING", "TERMINATED"}
        assert table.attrs["driver"]["pid"] == os.getpid()
        eta = table.attrs["eta_s"]
        assert isinstance(eta, float) and eta > 0

        assert main(["study", "status", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("study slow: 3 trials planned, ") and " not created yet; driver running" in out[0]
        assert "ETA " in out[0] and "ETA unknown" not in out[0], out[0]
        assert any("RUNNING" in line for line in out[2:])

        with pytest.raises(EbomlcError, match="is running"):  # a second driver would corrupt the study
            resume_study(path)

        for beat in (None, {"pid": _dead_pid(), "host": socket.gethostname(), "time": time.time()},
                     {"pid": os.getpid(), "host": "elsewhere", "time": time.time() - 3600}):
            (snapshot / HEARTBEAT_FILE).unlink(missing_ok=True)
            if beat is not None:
                (snapshot / HEARTBEAT_FILE).write_text(json.dumps(beat))
            stopped = study_status(snapshot)
            assert stopped.attrs["driver"] is None and stopped.attrs["eta_s"] is None
            assert "INTERRUPTED" in set(stopped["state"]) and "RUNNING" not in set(stopped["state"])
        assert main(["study", "status", str(snapshot)]) == 0
        out = capsys.readouterr().out
        assert "no driver running; ETA unknown" in out and f"ebomlc study resume {snapshot}" in out
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors

    table = study_status(path)
    assert list(table["state"]) == ["TERMINATED"] * 3 and list(table["epoch"]) == [EPOCHS] * 3
    assert table.attrs["planned"] == 3 and table.attrs["not_created"] == 0 and table.attrs["eta_s"] == 0
    assert table.attrs["driver"] is None and not (path / HEARTBEAT_FILE).exists()  # removed at the end
    assert main(["study", "status", str(path)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "study slow: 3 trials planned, 3 created, 0 not created yet; finished"


@pytest.mark.parametrize("status,state_epoch,file_epoch,driver,expected", [
    ("PENDING", 0, 0, True, "PENDING"),          # waiting for resources
    ("PENDING", 0, 2, True, "RUNNING"),          # the saved state predates its first epochs
    (None, 0, 1, True, "RUNNING"),               # a trial the saved state does not know yet
    ("RUNNING", 1, 1, True, "RUNNING"),
    ("RUNNING", 2, 4, True, "TERMINATED"),       # finished since the state was saved (epochs: 4)
    ("RUNNING", 2, 3, False, "INTERRUPTED"),     # the driver is gone
    ("PENDING", 0, 0, False, "INTERRUPTED"),
    ("TERMINATED", 2, 2, False, "TERMINATED"),   # stopped early (ASHA): Tune's final state stands
    ("ERROR", 1, 1, True, "ERROR"),
    ("ERROR", 1, 2, True, "RUNNING"),            # retried (resume --retry-errored) since
])
def test_trial_state_prefers_the_fresher_source(status, state_epoch, file_epoch, driver, expected):
    assert _state(status, state_epoch, file_epoch, 4, driver) == expected


def test_planned_trials_follow_methods_cases_and_grid():
    spec = load_spec({"name": "p", "dataset": "digits", "methods": ["ce", "ebomlc"],
                      "cases": [{"method": "ce", "epochs": 3}, {"method": "ebomlc", "epochs": 5},
                                {"corruption_level": 0.2}], "grid": {"seed": [1, 2]}})
    assert spec.num_trials == len(spec.trial_configs()) == 8
    assert spec.planned_epochs() == [c["epochs"] for c in spec.trial_configs()] == [3, 3, 120, 120, 5, 5, 120, 120]
    search = load_spec({"name": "s", "dataset": "digits", "methods": ["ebomlc"], "options": {"epochs": 4, "val_fraction": 0.1},
                        "search": {"num_samples": 5, "space": {"rho": {"uniform": [0.0, 1.0]}}}})
    assert search.num_trials == 5 and search.planned_epochs() == [4] * 5


def test_status_before_the_first_trial_lists_every_planned_trial_as_not_created(tmp_path, capsys):
    path = tmp_path / "fresh"
    path.mkdir()
    (path / "tuner.pkl").write_bytes(b"")
    (path / "study.yaml").write_text(load_spec(SLOW).to_yaml())
    (path / HEARTBEAT_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "time": time.time(), "every": 10}))
    table = study_status(path)
    assert len(table) == 0 and table.attrs["planned"] == 3 and table.attrs["not_created"] == 3
    assert table.attrs["eta_s"] is None and running_driver(str(path))["pid"] == os.getpid()
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("study slow: 3 trials planned, 0 created, 3 not created yet; driver running")
    assert out[0].endswith("ETA unknown")


def test_a_corrupt_saved_spec_is_one_line(tmp_path, capsys):
    path = tmp_path / "broken"
    path.mkdir()
    (path / "tuner.pkl").write_bytes(b"")
    (path / "study.yaml").write_text(yaml.safe_dump(SLOW) + "grid: {seed: [1\n")
    assert main(["study", "status", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path / 'study.yaml'}:" in err[0] and "not valid YAML" in err[0], err
