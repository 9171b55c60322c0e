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


# ---------------------------------------------------------------------------- no code runs from a checkpoint
class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a planted checkpoint could do to whoever loads it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _planted_checkpoint(folder: Path, marker: Path, name: str = "checkpoint.pt") -> Path:
    from ebomlc.config import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(method="ebomlc", dataset="digits", epochs=1).to_dict()
    torch.save({"config": config, "epoch": 1, "model": {}, "method_state": {"hook": _Payload(marker)}}, folder / name)
    (folder / "config.json").write_text(json.dumps(config))
    return folder / name


@pytest.mark.parametrize("command", ["correct", "resume", "trial"])
def test_a_checkpoint_holding_a_pickled_callable_is_refused_and_never_runs(tmp_path, capsys, command):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    if command == "trial":  # a study trial directory: its latest checkpoint_NNNNNN/trainer.pt
        _planted_checkpoint(run / "checkpoint_000000", marker, "trainer.pt")
        argv = ["correct", str(run)]
    else:
        _planted_checkpoint(run, marker)
        argv = ["correct", str(run)] if command == "correct" else ["train", *DIGITS, "--out", str(run), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not loaded since they could run code" in err and "posix.system" in err, err
    assert not marker.exists()
    # the payload is live: an unrestricted load would have run it
    torch.load(next(run.rglob("*.pt")), weights_only=False)
    assert marker.exists()


def test_checkpoints_keep_method_state_of_tensors_dicts_lists_numbers_strings_and_arrays(tmp_path):
    import numpy as np

    from ebomlc.train.checkpoint import save_torch

    net = torch.nn.Linear(3, 2)
    state = {"c_hat": np.arange(6.0).reshape(2, 3), "labels": np.array([1, 0, 2], dtype=np.int64),
             "second_net": net.state_dict(), "split": torch.tensor([True, False]), "history": [1, 2.5, "a", None],
             "nested": {"k": (1, 2), "x": np.float32(0.5)}, "rng": torch.Generator().get_state()}
    save_torch(state, tmp_path / "s.pt")
    back = load_torch(tmp_path / "s.pt")
    assert np.array_equal(back["c_hat"], state["c_hat"]) and back["labels"].dtype == np.int64
    assert torch.equal(back["second_net"]["weight"], net.weight.detach()) and back["history"] == [1, 2.5, "a", None]
    assert back["nested"]["k"] == (1, 2) and back["nested"]["x"] == np.float32(0.5)
    assert torch.equal(back["split"], state["split"]) and torch.equal(back["rng"], state["rng"])


def test_cluster_dashboard_listens_on_the_head_nodes_localhost_only():
    import yaml

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in (ROOT / "cluster.yaml").read_text()
    assert "ray dashboard cluster.yaml" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------------- full disks and failing writes
META = ["--method", "mlc", "--dataset", "digits", "--gold_fraction", "0.05", "--device", "cpu", "--threads", "1",
        "--quiet", "--max_steps_per_epoch", "4", "--eval_subset", "100"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted 3-epoch mlc run: its metrics (without timings) and summary."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *META, "--epochs", "3", "--out", str(out)]) == 0
    return {**_numbers(out), "dir": out}


def _numbers(out: Path) -> dict:
    """What a run computed: metrics.csv without its timing columns, the final accuracies, label_correction.csv."""
    import pandas as pd

    metrics = pd.read_csv(out / "metrics.csv").drop(columns=["epoch_time", "train_time", "eval_time"], errors="ignore")
    summary = json.loads((out / "summary.json").read_text())
    return {"dir": out, "metrics": metrics.to_dict("list"), "final": (summary["final_test_acc"], summary["best_test_acc"]),
            "lc": (out / "label_correction.csv").read_text()}


def _fail_writes(monkeypatch, name: str, at: int = 1, error: int = errno.ENOSPC) -> list[str]:
    """Make the ``at``-th atomic write of a file called ``name`` (and each later one) fail in ``fsync`` with
    ``OSError(error)``, as a full disk does; returns the list of failed targets."""
    real, seen, failed = os.fsync, [0], []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(f".{name}."):
            seen[0] += 1
            if seen[0] >= at:
                failed.append(target)
                raise OSError(error, os.strerror(error))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.name != LOCK_FILE]


@pytest.mark.parametrize("name, at, saved", [("checkpoint.pt", 2, 1), ("metrics.csv", 2, 2),
                                              ("label_correction.csv", 1, 3), ("summary.json", 1, 3),
                                              ("config.json", 1, 0)])
def test_a_failed_write_is_one_line_keeps_the_last_checkpoint_and_resume_continues_exactly(
        tmp_path, monkeypatch, capsys, reference, name, at, saved):
    out = tmp_path / "run"
    failed = _fail_writes(monkeypatch, name, at)
    assert main(["train", *META, "--epochs", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert failed and "\n" not in err and f"cannot write {out / name}: no space left on device;" in err, err
    monkeypatch.undo()  # space freed
    if saved:
        assert f"the last good checkpoint (epoch {saved}) is intact" in err
        assert f"continue with `ebomlc train --resume --out {out}`" in err
        assert not (out / LOCK_FILE).exists() and _no_temp_files(out)
        assert load_torch(out / "checkpoint.pt")["epoch"] == saved  # the last good checkpoint, intact
        assert main(["train", *META, "--out", str(out), "--resume"]) == 0
    else:  # the first write: nothing is left behind, and the same command starts the run
        assert "nothing was saved: free space and run the same command again" in err and not out.exists()
        assert main(["train", *META, "--epochs", "3", "--out", str(out)]) == 0
    assert {**_numbers(out), "dir": None} == {**reference, "dir": None}


def test_a_full_file_system_mid_run_then_resume_after_freeing_space(tmp_path, capsys, reference):
    """A real small tmpfs (when running as root and mounting works) whose space runs out at the second
    checkpoint; the resumed run, after the file system grows, ends with the uninterrupted run's numbers."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (the injected-ENOSPC test covers every write site)")
    probe = tmp_path / "probe"
    assert main(["train", *META, "--epochs", "1", "--out", str(probe)]) == 0
    size = (probe / "checkpoint.pt").stat().st_size
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # room for the first checkpoint and the small files, not for a second one written beside it
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.5) // 4096 * 4096}", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        out = mnt / "run"
        capsys.readouterr()
        assert main(["train", *META, "--epochs", "3", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"cannot write {out / 'checkpoint.pt'}: no space left on device;" in err, err
        assert "the last good checkpoint (epoch 1) is intact" in err
        assert load_torch(out / "checkpoint.pt")["epoch"] == 1 and _no_temp_files(out)
        subprocess.run(["mount", "-o", f"remount,size={size * 8}", str(mnt)], check=True)
        assert main(["train", *META, "--out", str(out), "--resume"]) == 0
        assert {**_numbers(out), "dir": None} == {**reference, "dir": None}
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_correct_and_analyze_on_a_full_disk_are_one_line_and_write_nothing_half(tmp_path, monkeypatch, capsys,
                                                                               reference):
    from .test_analysis_support import write_study

    target = tmp_path / "corrected.csv"
    _fail_writes(monkeypatch, "corrected.csv")
    assert main(["correct", str(reference["dir"]), "--out", str(target), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot write {target}: no space left on device; free space" in err, err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    study = write_study(tmp_path / "studies")
    for name in ("results.parquet", "final_results.csv", "rank_table.md", "time.png", "missing.txt"):
        out = tmp_path / f"analysis-{name}"
        _fail_writes(monkeypatch, name)
        assert main(["analyze", str(study), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"cannot write {out / name}: no space left on device; free space there" in err[0]
        assert not (out / name).exists() and _no_temp_files(out)
        monkeypatch.undo()
    assert main(["analyze", str(study), "--out", str(tmp_path / "ok")]) == 0


def test_a_study_trial_on_a_full_disk_errors_with_the_line_the_others_go_on_and_retry_errored_continues(tmp_path):
    """Real processes: the study's third trial-checkpoint write fails with ENOSPC (tests/full_disk's
    sitecustomize); that trial errors with the one line, the other finishes, and `study resume
    --retry-errored` continues it from its last checkpoint to the numbers of an uninterrupted run."""
    import yaml

    from ebomlc import TrainConfig
    from ebomlc.train import train_run
    from tune.launch import study_status

    from .studies import results, trial_dirs

    spec = {"name": "full", "dataset": "digits", "methods": ["ce"], "grid": {"seed": [1, 2]}, "max_failures": 0,
            "options": {"gold_fraction": 0.05, "device": "cpu", "epochs": 3, "max_steps_per_epoch": 3}}
    file = tmp_path / "full.yaml"
    file.write_text(yaml.safe_dump(spec))
    counter = tmp_path / "writes-until-full"
    counter.write_text("3")
    env = {**_env(), "PYTHONPATH": f"{ROOT / 'tests' / 'full_disk'}:{ROOT}", "EBOMLC_TEST_FULL_DISK": str(counter)}
    run = subprocess.run([sys.executable, "-m", "ebomlc", "study", "run", str(file), "--storage", str(tmp_path),
                          "--quiet"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert counter.read_text() == "0" and run.returncode == 1, run.stderr[-3000:]
    path = tmp_path / "full"
    table = study_status(path)
    assert sorted(table["state"]) == ["ERROR", "TERMINATED"]
    error = table.loc[table["state"] == "ERROR", "error"].item()
    assert "StorageError: cannot write " in error and "trainer.pt: no space left on device" in error, error
    assert f"ebomlc study resume {path} --retry-errored" in error
    resumed = subprocess.run([sys.executable, "-m", "ebomlc", "study", "resume", str(path), "--retry-errored"],
                             env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert set(study_status(path)["state"]) == {"TERMINATED"}
    for trial in trial_dirs(path):
        rows = results(trial)
        assert [r["epoch"] for r in rows] == [1, 2, 3], trial.name  # every epoch exactly once
        params = json.loads((trial / "params.json").read_text())
        summary = train_run(TrainConfig.from_dict(params), tmp_path / f"cli-{params['seed']}", progress=False)
        assert summary["final_test_acc"] == rows[-1]["test_acc"]
        assert rows[-1]["prov_torch_version"] == torch.__version__ and rows[-1]["prov_ray_version"] == _ray_version()
        assert rows[-1]["prov_threads"] == 1 and rows[-1]["prov_device"] == "cpu" and rows[-1]["prov_host"]


# ---------------------------------------------------------------------------- SIGTERM and Ctrl-C of a run
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_says_where_the_run_stopped_and_resume_continues(tmp_path, signum, code):
    out = tmp_path / "D"
    proc = _train_at(0.0, *DIGITS, "--epochs", "400", "--out", str(out))
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() or len(_metric_epochs(out)) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signum)
    rc, (_, err) = proc.wait(timeout=60), proc.communicate()
    line = err.strip()
    assert rc == code and "\n" not in line, err
    saved = load_torch(out / "checkpoint.pt")["epoch"]
    assert line == (f"ebomlc: interrupted: stopped in epoch {saved + 1} of 400; epochs 1-{saved} are saved in "
                    f"{out / 'checkpoint.pt'}; continue with: ebomlc train --resume --out {out}")
    # a consistent directory: the checkpoint and metrics.csv hold the same epochs, no temporary files, no lock
    assert _metric_epochs(out) == list(range(1, saved + 1)) and _no_temp_files(out)
    assert not (out / LOCK_FILE).exists()
    assert main(["train", *DIGITS, "--out", str(out), "--resume", "--epochs", str(saved + 2)]) == 0
    assert _metric_epochs(out) == list(range(1, saved + 3))


# ---------------------------------------------------------------------------- every number says where it came from
def test_config_and_summary_record_software_and_hardware(tmp_path):
    import platform
    import socket

    from ebomlc.provenance import cpu_model

    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--max_steps_per_epoch", "2", "--out", str(out)]) == 0
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    for name in ("config.json", "summary.json"):
        origin = json.loads((out / name).read_text())["provenance"]
        assert origin == {"ebomlc_version": ebomlc.__version__, "git_commit": commit, "git_dirty": dirty,
                          "torch_version": torch.__version__, "ray_version": _ray_version(),
                          "python_version": platform.python_version(), "device": "cpu", "device_name": cpu_model(),
                          "device_count": os.cpu_count(), "threads": 1, "host": socket.gethostname()}
    assert cpu_model() and cpu_model() != "unknown CPU"
    # the saved options stay resumable (provenance is not an option)
    assert main(["train", *DIGITS, "--out", str(out), "--resume", "--epochs", "2", "--max_steps_per_epoch", "2"]) == 0


def _ray_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("ray")


def test_rank_table_header_says_when_trials_ran_on_different_devices_or_versions(tmp_path, capsys):
    from analysis.report import analyze

    from .test_analysis_support import write_study

    study = write_study(tmp_path / "studies")
    origin = {"prov_device_name": "NVIDIA H100 80GB HBM3", "prov_device_count": 1, "prov_torch_version": "2.13.0",
              "prov_ray_version": "2.60.0", "prov_python_version": "3.12.3", "prov_ebomlc_version": "0.1.0",
              "prov_git_commit": "0123456789abcdef", "prov_git_dirty": False}
    trials = sorted(p for p in study.iterdir() if p.is_dir())
    for i, trial in enumerate(trials):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        other = {"prov_device_name": "NVIDIA A10G"} if i == 0 else {}
        (trial / "result.json").write_text("".join(json.dumps({**r, **origin, **other}) + "\n" for r in rows))
    analyze(study, tmp_path / "a", echo=print)
    header = (tmp_path / "a" / "rank_table.md").read_text().split("|")[0]
    assert ("**The trials ran on different devices or versions**: device_name NVIDIA H100 80GB HBM3 (17 trials), "
            "NVIDIA A10G (1 trial).") in header, header
    assert "The trials ran on different devices or versions: device_name" in capsys.readouterr().out
    for trial in trials[:1]:  # all alike now
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        (trial / "result.json").write_text("".join(json.dumps({**r, **origin}) + "\n" for r in rows))
    analyze(study, tmp_path / "b")
    header = (tmp_path / "b" / "rank_table.md").read_text().split("|")[0]
    assert ("Ran on: NVIDIA H100 80GB HBM3 x1, torch 2.13.0, Ray 2.60.0, Python 3.12.3, ebomlc 0.1.0 "
            "(commit 0123456789).") in header, header


def test_a_second_study_driver_is_refused_while_one_holds_the_study_directory(tmp_path, capsys):
    """`study run` and `study resume` take the study directory's lock before anything else (a real holder
    process here stands in for a running driver; nothing is started or written)."""
    import yaml

    study = tmp_path / "s"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "dataset": "digits", "methods": ["ce"], "options": {"epochs": 1}}))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ebomlc.train.lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(study)],
                              env=_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["study", "run", str(spec), "--storage", str(tmp_path), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"study {study} is running (driver pid {holder.pid} on " in err
        assert f"watch it with `ebomlc study status {study}`" in err
        (study / "tuner.pkl").write_bytes(b"")  # as if the running driver had created its study
        assert main(["study", "resume", str(study)]) == 2
        assert f"is running (driver pid {holder.pid} on " in capsys.readouterr().err
        assert sorted(p.name for p in study.iterdir()) == [LOCK_FILE, "tuner.pkl"]
    finally:
        holder.kill()
        holder.wait()


def test_a_restored_trial_continues_from_its_own_checkpoint_of_the_last_recorded_epoch(tmp_path, monkeypatch):
    """What a killed driver leaves: result.json records epoch 3 but the experiment state knew epoch 1's
    checkpoint; the trial's own checkpoints are found by content (Tune renumbers them after a restore)."""
    import pyarrow.fs
    from ray import tune as ray_tune

    import tune.trainable as trainable
    from ebomlc.config import TrainConfig
    from ebomlc.train import Trainer
    from ebomlc.train.checkpoint import save_torch

    trainer = Trainer(TrainConfig(method="ce", dataset="digits", epochs=3, max_steps_per_epoch=2, threads=1))
    trial = tmp_path / "trial"
    states = {}
    for epoch in (1, 2, 3):
        trainer.run_epoch(evaluate=False)
        states[epoch] = trainer.state_dict()
    for name, epoch in (("checkpoint_000000", 3), ("checkpoint_000001", 1), ("checkpoint_000002", 2)):
        save_torch(states[epoch], trial / name / trainable.STATE_FILE)
    (trial / "checkpoint_000003").mkdir()
    (trial / "checkpoint_000003" / trainable.STATE_FILE).write_bytes(b"cut")
    (trial / "result.json").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)) + '{"epo')

    class Storage:
        storage_filesystem, trial_fs_path = pyarrow.fs.LocalFileSystem(), str(trial)

    class Context:
        def get_storage(self):
            return Storage()

    monkeypatch.setattr(ray_tune, "get_context", lambda: Context())
    found = trainable.own_reported_checkpoint(1)
    assert found["epoch"] == 3 and torch.equal(found["torch_rng"], states[3]["torch_rng"])
    assert trainable.own_reported_checkpoint(3) is None  # Tune's own checkpoint is the latest already
    (trial / "checkpoint_000000" / trainable.STATE_FILE).unlink()  # the epoch-3 checkpoint is gone
    assert trainable.own_reported_checkpoint(1) is None
