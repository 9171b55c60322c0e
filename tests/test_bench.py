"""``ebomlc bench``: the JSON shape the benchmark promises, whole-epoch timing, memory that tells
methods apart, and one-line errors."""
import json

import pytest

from ebomlc.bench import memory_in_subprocess
from ebomlc.cli import main


def test_step_timing_writes_one_object_per_model(tmp_path, capsys):
    out = tmp_path / "steps.json"
    assert main(["bench", "--models", "digits_cnn", "--methods", "ce", "mlc", "ebomlc:partial", "--steps", "2",
                 "--warmup", "1", "--no_memory", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["digits_cnn"] and results[0]["device"].startswith("cpu")
    methods = results[0]["methods"]
    assert list(methods) == ["ce", "mlc", "ebomlc:partial"]
    for m in methods.values():
        assert set(m) >= {"ms_per_step", "images_per_s", "peak_mem_mb", "ratio_to_ce"} and m["ms_per_step"] > 0
        assert m["images_per_s"] == pytest.approx(1000 * 100 / m["ms_per_step"])
    assert methods["ce"]["ratio_to_ce"] == 1.0
    assert methods["mlc"]["ratio_to_ce"] == pytest.approx(methods["mlc"]["ms_per_step"] / methods["ce"]["ms_per_step"])
    assert "ebomlc:partial" in capsys.readouterr().out


def test_whole_epochs_run_through_the_trainer_on_shared_data(tmp_path):
    out = tmp_path / "epochs.json"
    assert main(["bench", "--models", "--epochs", "digits", "--methods", "ce", "l2rw", "--epoch_rounds", "2",
                 "--epoch_steps", "3", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["model"] == "epoch:digits" and result["rounds"] == 2
    for m in result["methods"].values():
        assert m["steps"] == 3 and m["s_per_epoch"] > 0 and m["silver_images_per_s"] == pytest.approx(300 / m["s_per_epoch"])
    assert result["methods"]["ce"]["ratio_to_ce"] == 1.0


def test_second_order_step_needs_more_memory_than_ce():
    ce = memory_in_subprocess("ce", "resnet32", "cpu")
    mlc = memory_in_subprocess("mlc", "resnet32", "cpu")
    assert ce > 50 and mlc > 1.3 * ce  # MiB; MLC keeps a 150-image graph of grad_w g


@pytest.mark.parametrize("flags,message", [
    (["--methods", "ce", "sgd"], "unknown method(s) sgd"),
    (["--models", "--epochs", "digits", "--epoch_rounds", "0"], "must be positive"),
    (["--models"], "nothing to time"),
    (["--steps", "0"], "must be positive"),
    (["--warmup", "-1"], "--warmup must be 0 or more"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
])
def test_bad_input_is_one_line(capsys, flags, message):
    assert main(["bench", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_packing_benchmark_runs_workers_side_by_side(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "packing.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "packing.py"
    subprocess.run([sys.executable, str(script), "--levels", "2", "1", "--steps", "2", "--epochs", "1",
                    "--json", str(out)], check=True, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert [r["workers"] for r in report["levels"]] == [1, 2]
    one, two = report["levels"]
    assert one["throughput_vs_one"] == 1.0 and two["steps_per_s"] > 0
    assert two["throughput_vs_one"] == pytest.approx(two["steps_per_s"] / one["steps_per_s"])
