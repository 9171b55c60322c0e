"""Chaos check: a study whose driver is SIGKILLed at seeded random moments and whose trial workers are
killed, each followed by ``ebomlc study resume``; then every trial must hold every epoch exactly once and
end with the numbers of the same study run without interruption.

A small study (digits; ce, mlc, ebomlc x 2 seeds; a few epochs; one thread per trial) runs in a driver
process of its own session (``ebomlc study run``). In seeded random order, ``--driver_kills`` rounds
SIGKILL the driver's whole process group (the driver and the Ray it started) a seeded random time after
the study made progress, and ``--worker_kills`` rounds SIGKILL the process of a running trial (that
trial errors; the driver is stopped a few seconds later). Each round after the
first starts with ``ebomlc study resume --retry-errored``; the last one runs the study to its end.

The reference is the same study run once without interruption (``--reference study``), or each trial's
options trained by ``ebomlc train`` (``--reference runs``; a study trial and ``ebomlc train`` give
identical numbers, tests/test_tune.py). Every reported metric but the timings is compared, epoch by
epoch, for equality.

    nice -n 10 python benchmarks/chaos.py --out runs/chaos --json benchmarks/chaos.json
    python benchmarks/chaos.py --methods ce --seeds 1 --epochs 3 --driver_kills 1 --worker_kills 1 \\
        --reference runs --out /tmp/chaos         # the reduced check of the test suite
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Reported values that differ between processes or runs by nature (timings, process, Tune's bookkeeping).
VOLATILE = {"epoch_time", "train_time", "eval_time", "time_this_iter_s", "time_total_s", "timestamp", "pid",
            "hostname", "node_ip", "date", "time_since_restore", "iterations_since_restore", "training_iteration",
            "trial_id", "done", "checkpoint_dir_name", "config", "should_checkpoint", "experiment_tag"}


def study_spec(name: str, methods: list[str], seeds: list[int], epochs: int, steps: int | None) -> dict:
    options: dict[str, Any] = {"gold_fraction": 0.05, "device": "cpu", "epochs": epochs, "corruption_level": 0.4,
                               "bs": 32}
    if steps:
        options["max_steps_per_epoch"] = steps
    return {"name": name, "dataset": "digits", "methods": methods, "grid": {"seed": seeds}, "max_failures": 0,
            "max_concurrent": 2, "resources": {"cpu": 1}, "options": options}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
            "OMP_NUM_THREADS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1"}


def _ebomlc(*args: str) -> list[str]:
    return [sys.executable, "-m", "ebomlc", *args]


def trial_dirs(study: Path) -> list[Path]:
    return sorted(p.parent for p in study.glob("*/params.json"))


def results(trial: Path) -> list[dict]:
    file = trial / "result.json"
    if not file.exists():
        return []
    rows = []
    for line in file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by the kill
            rows.append({"unreadable": line})
    return rows


def _reported(study: Path) -> int:
    return sum(len(results(t)) for t in trial_dirs(study))


def _running_trial_pid(study: Path, epochs: int) -> tuple[Path, int] | None:
    """A trial that has reported, is not finished, and whose worker process is alive."""
    for trial in trial_dirs(study):
        rows = [r for r in results(trial) if "epoch" in r]
        if rows and rows[-1]["epoch"] < epochs and not (trial / "error.txt").exists():
            pid = int(rows[-1]["pid"])
            try:
                os.kill(pid, 0)
            except OSError:
                continue
            return trial, pid
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_chaos(out: Path, methods: list[str], seeds: list[int], epochs: int, steps: int | None, driver_kills: int,
              worker_kills: int, seed: int, max_delay: float, reference: str, log=print) -> dict:
    """Run the chaos study in ``out`` and compare it with its reference; return the figures."""
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "chaos.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(study_spec("chaos", methods, seeds, epochs, steps)))
    study = out / "chaos"
    rng = random.Random(seed)
    rounds = ["driver"] * driver_kills + ["worker"] * worker_kills
    rng.shuffle(rounds)
    done = {"driver": 0, "worker": 0, "extra_driver_stops": 0, "finished_before_kill": 0}
    started = time.monotonic()
    for index, kind in enumerate(rounds + ["finish"]):
        command = (_ebomlc("study", "run", str(spec_file), "--storage", str(out), "--quiet") if index == 0 else
                   _ebomlc("study", "resume", str(study), "--retry-errored"))
        before = _reported(study)
        proc = subprocess.Popen(command, cwd=ROOT, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if kind == "finish":
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"the final resume exited {proc.returncode}: {err[-2000:]}")
            break
        deadline = time.monotonic() + 600
        while _reported(study) <= before and proc.poll() is None:  # progress first: every round moves on
            if time.monotonic() > deadline:
                _kill_group(proc)
                raise RuntimeError("no progress within 600 s")
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, max_delay))
        if proc.poll() is not None:
            done["finished_before_kill"] += 1
            log(f"round {index + 1} ({kind}): the driver ended (exit {proc.returncode}) before the kill")
            continue
        if kind == "driver":
            _kill_group(proc)
            done["driver"] += 1
            log(f"round {index + 1}: driver SIGKILLed after {_reported(study)} reported epochs")
            continue
        target, deadline = None, time.monotonic() + 120
        while target is None and proc.poll() is None and time.monotonic() < deadline:  # a trial mid-run
            target = _running_trial_pid(study, epochs)
            time.sleep(0.02)
        if target is None:
            _kill_group(proc)
            done["extra_driver_stops"] += 1
            log(f"round {index + 1}: no running trial to kill; driver stopped instead")
            continue
        trial, pid = target
        os.kill(pid, signal.SIGKILL)
        done["worker"] += 1
        log(f"round {index + 1}: worker {pid} of {trial.name} SIGKILLed")
        deadline = time.monotonic() + 5  # Tune usually records the error by then; the resume retries it either way
        while not (trial / "error.txt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            _kill_group(proc)
            done["extra_driver_stops"] += 1
    seconds = time.monotonic() - started
    figures = check(study, epochs, reference, out, spec_file)
    figures.update(kills_driver=done["driver"], kills_worker=done["worker"],
                   extra_driver_stops=done["extra_driver_stops"], finished_before_kill=done["finished_before_kill"],
                   kills_survived=done["driver"] + done["worker"], seed=seed, seconds=round(seconds, 1),
                   methods=methods, seeds=seeds, epochs=epochs, max_steps_per_epoch=steps, reference=reference)
    return figures


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _compared(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE and not k.startswith("prov_")}


def check(study: Path, epochs: int, reference: str, out: Path, spec_file: Path) -> dict:
    """Every trial: epochs 1..E exactly once, and every compared value equal to the reference's."""
    trials = trial_dirs(study)
    ref = _reference(reference, out, spec_file, trials)
    complete, identical, epochs_checked, problems = 0, 0, 0, []
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        key = (params["method"], params["seed"])
        rows = results(trial)
        seen = [r.get("epoch") for r in rows]
        if seen == list(range(1, epochs + 1)):
            complete += 1
        else:
            problems.append(f"{trial.name}: epochs {seen}")
        epochs_checked += len(rows)
        theirs = ref.get(key, [])
        same = len(theirs) == len(rows) and all(
            all(_same(value, other.get(k, value)) for k, value in _compared(row).items() if k in other)
            and _compared(row).keys() & other.keys()
            for row, other in zip(rows, theirs))
        identical += same
        if not same:
            problems.append(f"{trial.name}: numbers differ from the reference")
    return {"trials": len(trials), "trials_complete": complete, "epochs_checked": epochs_checked,
            "trials_identical": identical, "problems": problems}


def _reference(kind: str, out: Path, spec_file: Path, trials: list[Path]) -> dict:
    """(method, seed) -> the reference's epoch rows."""
    if kind == "study":
        import yaml

        spec = yaml.safe_load(spec_file.read_text())
        spec["name"] = "reference"
        ref_file = out / "reference.yaml"
        ref_file.write_text(yaml.safe_dump(spec))
        shutil.rmtree(out / "reference", ignore_errors=True)
        subprocess.run(_ebomlc("study", "run", str(ref_file), "--storage", str(out), "--quiet"), cwd=ROOT, env=_env(),
                       check=True, stdout=subprocess.DEVNULL)
        rows = {}
        for trial in trial_dirs(out / "reference"):
            params = json.loads((trial / "params.json").read_text())
            rows[(params["method"], params["seed"])] = results(trial)
        return rows
    import csv

    from ebomlc import TrainConfig
    from ebomlc.train import train_run

    rows = {}
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        run = out / "reference-runs" / trial.name
        shutil.rmtree(run, ignore_errors=True)
        train_run(TrainConfig.from_dict(params), run, progress=False)
        with open(run / "metrics.csv") as f:
            rows[(params["method"], params["seed"])] = [{k: float(v) if v != "" else math.nan for k, v in r.items()}
                                                         for r in csv.DictReader(f)]
    return rows


def markdown(figures: dict, machine: str) -> str:
    """The BENCHMARKS.md block of a chaos run."""
    ok = figures["trials_complete"] == figures["trials"] == figures["trials_identical"]
    return "\n".join([
        f"Chaos check (`benchmarks/chaos.py`, seed {figures['seed']}) on {machine}: a digits study of "
        f"{', '.join(figures['methods'])} x seeds {figures['seeds']} ({figures['trials']} trials, "
        f"{figures['epochs']} epochs each, one thread per trial, 2 at a time).", "",
        "| kills survived | driver SIGKILLs | trial-worker SIGKILLs | trials | epochs checked | every epoch once | "
        "identical to the uninterrupted run | wall time |",
        "| --: | --: | --: | --: | --: | --: | --: | --: |",
        f"| {figures['kills_survived']} | {figures['kills_driver']} | {figures['kills_worker']} | {figures['trials']} | "
        f"{figures['epochs_checked']} | {figures['trials_complete']}/{figures['trials']} | "
        f"{figures['trials_identical']}/{figures['trials']} | {figures['seconds']:.0f} s |", "",
        "All trials complete and bit-identical." if ok else "Problems: " + "; ".join(figures["problems"])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/chaos", help="working directory (emptied first)")
    p.add_argument("--methods", nargs="+", default=["ce", "mlc", "ebomlc"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max_steps_per_epoch", type=int, default=None)
    p.add_argument("--driver_kills", type=int, default=5)
    p.add_argument("--worker_kills", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill order and moments")
    p.add_argument("--max_delay", type=float, default=3.0, help="seconds after progress within which a kill comes")
    p.add_argument("--reference", choices=["study", "runs"], default="study")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--machine", default=None, help="machine description for the markdown block")
    a = p.parse_args(argv)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    figures = run_chaos(out, a.methods, a.seeds, a.epochs, a.max_steps_per_epoch, a.driver_kills, a.worker_kills,
                        a.seed, a.max_delay, a.reference)
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2) + "\n")
    from ebomlc.provenance import cpu_model

    print(markdown(figures, a.machine or f"{cpu_model()}, {os.cpu_count()} cores"))
    return 0 if figures["trials_complete"] == figures["trials"] == figures["trials_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
