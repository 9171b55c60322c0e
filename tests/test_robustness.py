"""Nothing lost, whatever happens: one writer per run directory (real processes), full disks and failing
writes at every write site, SIGTERM/Ctrl-C of a run, and checkpoints that never run code stored in them."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ebomlc
from ebomlc.cli import main
from ebomlc.errors import EbomlcError
from ebomlc.train.checkpoint import load_torch
from ebomlc.train.lock import LOCK_FILE, RunLock, RunLocked

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--method", "ce", "--dataset", "digits", "--gold_fraction", "0.05", "--device", "cpu", "--threads", "1",
          "--quiet"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _train_at(start: float, *args: str) -> subprocess.Popen:
    """``ebomlc train ARGS`` in a fresh process that waits until ``start`` (time.time()) before it begins."""
    code = ("import sys, time; from ebomlc.cli import main; t = float(sys.argv[1]); "
            "time.sleep(max(0.0, t - time.time())); sys.exit(main(['train', *sys.argv[2:]]))")
    return subprocess.Popen([sys.executable, "-c", code, repr(start), *args], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _metric_epochs(out: Path) -> list[int]:
    lines = (out / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("epoch")
    return [int(float(line.split(",")[column])) for line in lines[1:]]


# ---------------------------------------------------------------------------- one writer per run directory
def test_writers_started_at_the_same_instant_one_trains_the_others_are_refused(tmp_path):
    out = tmp_path / "D"
    start = time.time() + 4.0  # after every interpreter has started and imported ebomlc
    procs = [_train_at(start, *DIGITS, "--epochs", "4", "--out", str(out)) for _ in range(3)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2, 2], results
    winner = next(p for p, (rc, _, _) in zip(procs, results) if rc == 0)
    for rc, _, err in results:
        if rc == 2:
            line = err.strip()
            assert "\n" not in line and "Traceback" not in line
            # refused by the lock (naming the live holder), or, had the winner already finished, as an existing run
            assert (f"is in use by another run (pid {winner.pid} on " in line and " since " in line) or \
                   "already exists" in line, line
    assert _metric_epochs(out) == [1, 2, 3, 4]  # one run's rows, once each
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_resume_of_a_live_run_is_refused_and_a_killed_holder_does_not_block_resume(tmp_path):
    out = tmp_path / "D"
    first = _train_at(0.0, *DIGITS, "--epochs", "400", "--out", str(out))
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-m", "ebomlc", "train", *DIGITS, "--out", str(out), "--resume"],
                            env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert f"is in use by another run (pid {first.pid} on " in second.stderr and second.stderr.count("\n") == 1
    holder = json.loads((out / LOCK_FILE).read_text())
    assert holder["pid"] == first.pid and holder["since"]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert (out / LOCK_FILE).exists()  # a killed holder leaves its file, but the OS released the lock
    done = max(_metric_epochs(out))
    resumed = subprocess.run([sys.executable, "-m", "ebomlc", "train", *DIGITS, "--out", str(out), "--resume",
                              "--epochs", str(done + 1)], env=_env(), cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _metric_epochs(out) == list(range(1, done + 2))


def test_python_api_is_refused_while_another_process_holds_the_directory(tmp_path):
    out = tmp_path / "D"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ebomlc.train.lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
                              env=_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on .* since "):
            ebomlc.train(method="ce", dataset="digits", epochs=1, out=out, progress=False, threads=1)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    summary = ebomlc.train(method="ce", dataset="digits", epochs=1, out=out, progress=False, threads=1,
                           max_steps_per_epoch=2)
    assert summary["epochs"] == 1


def test_a_refused_bad_input_leaves_no_directory_behind(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["train", *DIGITS, "--out", str(out), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    lock = RunLock(tmp_path / "held").acquire()
    with pytest.raises(RunLocked):
        RunLock(tmp_path / "held").acquire()
    lock.release()
    RunLock(tmp_path / "held").acquire().release()
