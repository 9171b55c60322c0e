"""`make gpu-check`'s script in its CI form (`--device cpu --quick`): every part runs, the agreement check
covers every method, and neither Ray nor Optuna is imported (the GPU machine lacks them)."""
import json
import os
import subprocess
import sys

from ebomlc.methods import METHODS

from .studies import ROOT


def test_gpu_check_quick_on_cpu_runs_every_part_without_ray_or_optuna(tmp_path):
    blockers = tmp_path / "blockers"
    for name in ("ray", "optuna"):
        (blockers / name).mkdir(parents=True)
        (blockers / name / "__init__.py").write_text(f"raise ImportError('gpu_check must not import {name}')\n")
    env = {**os.environ, "PYTHONPATH": f"{blockers}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    out, md = tmp_path / "gpu_check.json", tmp_path / "gpu_check.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                          "--json", str(out), "--md", str(md)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["imported"] == [] and result["quick"] is True
    agreement = result["agreement"]
    assert list(agreement["methods"]) == list(METHODS) and agreement["all_ok"]
    for m in agreement["methods"].values():  # the CPU against itself: the same numbers exactly
        assert m["param_rel_diff"] == 0.0 and m["loss_rel_diff"] == 0.0
    assert set(result["bench"]["methods"]) == set(METHODS) and result["bench"]["methods"]["ce"]["ratio_to_ce"] == 1.0
    levels = result["packing"]["levels"]
    assert [lv["workers"] for lv in levels] == [1, 2] and result["packing"]["best_level"] in (1, 2)
    epochs = result["two_epochs"]
    assert epochs["s_per_epoch"] > 0 and epochs["eval_s"] > 0 and epochs["steps_per_epoch"] == 3
    projection = result["projection"]
    per_step = epochs["s_per_epoch"] / epochs["steps_per_epoch"]
    eval_full = epochs["eval_s"] * epochs["test_images"] / epochs["eval_images"]
    assert projection["trial_minutes_ebomlc"] == 120 * (per_step * epochs["full_steps"] + eval_full) / 60
    assert result["packing"]["best_speedup"] >= 1.0  # the best level is at least one training alone
    assert projection["table1_trials"] > 0
    assert projection["table1_gpu_hours_packed"] == projection["table1_gpu_hours_unpacked"] / result["packing"]["best_speedup"]
    text = md.read_text()
    assert text.startswith("### GPU check on ") and all(f"| {name} |" in text for name in METHODS)
    assert "Projection: one 120-epoch EBOMLC trial" in text
