"""A study on a two-node local Ray cluster loses its worker node mid-study: no trial is lost, the
lost node's trial continues on the head node from its checkpoint.

The cluster (``ray.cluster_utils.Cluster``) and the study's driver (``ebomlc study run --address``)
run in a subprocess (this module as a script), apart from any Ray this pytest process started.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .studies import ROOT, results, trial_dirs

EPOCHS = 6
SPEC = {"name": "lost_node", "dataset": "digits", "methods": ["ebomlc"], "grid": {"seed": [1, 2]},
        "options": {"gold_fraction": 0.05, "device": "cpu", "epochs": EPOCHS, "bs": 32},  # ~40 steps an epoch
        "max_failures": 2}


def test_trials_of_a_lost_worker_node_continue_on_the_head_node(tmp_path):
    script = subprocess.Popen([sys.executable, "-m", "tests.test_tune_cluster", str(tmp_path)], cwd=ROOT,
                              start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = script.communicate(timeout=420)
    finally:
        try:
            os.killpg(script.pid, signal.SIGKILL)  # whatever of the cluster is left, however it ended
        except ProcessLookupError:
            pass
    assert script.returncode == 0, (out + err)[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["driver_rc"] == 0, report
    path = tmp_path / "lost_node"
    trials = trial_dirs(path)
    assert len(trials) == 2
    for trial in trials:
        assert [r["epoch"] for r in results(trial)] == list(range(1, EPOCHS + 1)), trial.name  # each epoch once
    lost = path / report["lost_trial"]
    rows = results(lost)
    done = report["lost_trial_epochs"]  # epochs the lost node had reported when it was removed
    assert 1 <= done < EPOCHS
    lost_pid = rows[done - 1]["pid"]  # the process on the worker node
    moved = next((i for i, row in enumerate(rows) if row["pid"] != lost_pid), None)
    assert moved is not None, "the lost node's trial never continued in another process"
    assert done <= moved < EPOCHS and all(row["pid"] != lost_pid for row in rows[moved:])

    from tune.launch import study_status

    table = study_status(path).set_index("trial")
    assert set(table["state"]) == {"TERMINATED"} and table.loc[lost.name, "failures"] >= 1


# ------------------------------------------------------------------------------- the subprocess
def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _run(tmp: Path) -> dict:
    import yaml
    from ray.cluster_utils import Cluster

    spec = tmp / "lost_node.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    fast_failure_detection = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
                              "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": fast_failure_detection})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    worker_raylet = worker.all_processes["raylet"][0].process.pid
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S="1")
    driver = subprocess.Popen([sys.executable, "-m", "ebomlc", "study", "run", str(spec), "--storage", str(tmp),
                               "--address", cluster.address, "--quiet"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=sys.stderr)
    lost_trial, lost_epochs = None, 0
    deadline = time.monotonic() + 240
    while lost_trial is None:  # a trial on the worker node has reported (and checkpointed) an epoch
        assert driver.poll() is None and time.monotonic() < deadline, "no trial ran on the worker node"
        for trial in trial_dirs(tmp / "lost_node"):
            rows = results(trial)
            if rows and _parent_pid(rows[-1]["pid"]) == worker_raylet and rows[-1]["epoch"] < EPOCHS:
                lost_trial, lost_epochs = trial.name, len(rows)
        time.sleep(0.05)
    cluster.remove_node(worker, allow_graceful=False)
    driver_rc = driver.wait(timeout=300)
    cluster.shutdown()
    return {"driver_rc": driver_rc, "lost_trial": lost_trial, "lost_trial_epochs": lost_epochs}


if __name__ == "__main__":
    print(json.dumps(_run(Path(sys.argv[1]))))
