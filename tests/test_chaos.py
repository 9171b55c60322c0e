"""The reduced chaos check (benchmarks/chaos.py): a two-trial digits study whose driver is SIGKILLed once and
one of whose trial workers is SIGKILLed once, each followed by `study resume`; every trial then holds every
epoch exactly once with the numbers of the same trials trained without interruption."""
import json

from .studies import benchmark_module


def test_reduced_chaos_check_kills_the_driver_and_a_worker_and_loses_nothing(tmp_path):
    chaos = benchmark_module("chaos")
    figures = chaos.run_chaos(tmp_path, methods=["ce"], seeds=[1, 2], epochs=3, steps=6, driver_kills=1,
                              worker_kills=1, seed=0, max_delay=0.3, reference="runs", log=lambda _line: None)
    assert figures["problems"] == [], figures
    assert figures["trials"] == figures["trials_complete"] == figures["trials_identical"] == 2
    assert figures["epochs_checked"] == 6
    assert figures["kills_driver"] == 1  # the first round always finds the study running
    # the worker round: a worker killed, the driver finished first, or, when no trial was mid-epoch at that
    # moment (epochs of 6 steps are short), the driver stopped instead (an extra driver stop)
    worker_round = figures["kills_worker"] + figures["finished_before_kill"]
    assert worker_round == 1 or (worker_round == 0 and figures["extra_driver_stops"] == 1), figures
    # what `check` compares: a trial with a changed number is caught
    trial = chaos.trial_dirs(tmp_path / "chaos")[0]
    rows = chaos.results(trial)
    rows[-1]["test_acc"] += 1e-9
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = chaos.check(tmp_path / "chaos", 3, "runs", tmp_path, tmp_path / "chaos.yaml")
    assert again["trials_identical"] == 1 and "numbers differ" in again["problems"][0]
