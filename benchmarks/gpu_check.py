"""The GPU check: one command, one JSON file and a markdown block for BENCHMARKS.md (``make gpu-check``).

1. agreement: three training steps of every method (``ebomlc.methods.METHODS``) on the device against the
   same steps on the CPU: the digits CNN, the same initial weights and the same batches (built on the CPU),
   TF32 off; the largest parameter difference relative to the largest parameter, and the largest relative
   difference of a step's reported losses, must stay within ``TOLERANCE``;
2. ``ebomlc bench`` on the device: ResNet-32, every method, ms/step, images/s, peak memory, ratio to CE;
3. packing: 1, 2, 4 and 8 concurrent trainings on the device (benchmarks/packing.py), total images/s and
   the best level;
4. a 2-epoch CIFAR-10 run of the default EBOMLC (``--data_dir``: JPEG folders or pickles): seconds per epoch
   and evaluation seconds;
5. the projection: minutes for one 120-epoch trial and GPU-hours for every trial of
   ``tune/studies/table1_cifar10.yaml`` at the best packing (each method's trial scaled by its step time).

    python benchmarks/gpu_check.py --device cuda --data_dir data/cifar10-jpeg          # ~8 min on one GPU
    python benchmarks/gpu_check.py --device cpu --quick                                 # CI: ~30 s

``--quick`` shrinks every part (the digits CNN for the bench, packing 1 and 2 for 2 steps, digits for the
2-epoch run when no ``--data_dir`` is given) so that the same code runs on a CPU in CI. Ray and Optuna are
never imported (the GPU machine may not have them).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Relative tolerances of the agreement check (float32 on both sides, TF32 off, three steps).
TOLERANCE = {"params": 1e-3, "losses": 1e-3}
TABLE1 = ROOT / "tune" / "studies" / "table1_cifar10.yaml"
EPOCHS_PER_TRIAL = 120


# ------------------------------------------------------------------------------------------- 1. agreement
def agreement(device: str, steps: int = 3, bs: int = 32, methods: list[str] | None = None) -> dict:
    """Every method's ``steps`` steps on ``device`` and on the CPU from the same start and batches."""
    import torch

    from ebomlc.config import TrainConfig
    from ebomlc.methods import METHODS, Batch
    from ebomlc.train.loop import Trainer, resolve_device

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev, cpu = resolve_device(device), torch.device("cpu")
    out = {}
    for name in methods or list(METHODS):
        config = TrainConfig(method=name, dataset="digits", gold_fraction=0.05, bs=bs, epochs=4, seed=0,
                             device="cpu", threads=None).resolved()
        try:
            pair = [Trainer(config, device=cpu), Trainer(config, device=dev)]
            pair[1].model.load_state_dict(pair[0].model.state_dict())
            if pair[0].meta is not None:
                pair[1].meta.load_state_dict(pair[0].meta.state_dict())
            for trainer in pair:
                if trainer.method.on_epoch_start is not None:
                    trainer.method.on_epoch_start(trainer)
                trainer.model.train()
                if trainer.meta is not None:
                    trainer.meta.train()
            g = torch.Generator().manual_seed(1)
            losses: list[list[dict]] = [[], []]
            for _ in range(steps):
                index = torch.randperm(len(pair[0].y_train), generator=g)[:bs]
                batch = pair[0]._batch(index)
                moved = Batch(*[t.to(dev) if t is not None else None for t in
                                (batch.x_silver, batch.y_silver, batch.x_gold, batch.y_gold)])
                draws = torch.randint(0, 2 ** 31, (1,), generator=g).item()
                for i, (trainer, b) in enumerate(zip(pair, (batch, moved))):
                    torch.manual_seed(draws)  # the same random draws inside both steps (PMW-Net's sampling)
                    losses[i].append({k: float(v) for k, v in trainer.method.step(trainer.ctx, b).items()})
            params = [_parameters(t) for t in pair]
            scale = max(float(p.abs().max()) for p in params[0].values()) or 1.0
            p_diff = max(float((params[0][k] - params[1][k].to(cpu)).abs().max()) for k in params[0]) / scale
            l_diff = max((abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(*losses) for k in a
                          if math.isfinite(a[k])), default=0.0)
            out[name] = {"param_rel_diff": p_diff, "loss_rel_diff": l_diff,
                         "ok": p_diff <= TOLERANCE["params"] and l_diff <= TOLERANCE["losses"]}
        except Exception as exc:  # noqa: BLE001 - a method that fails on the device is a finding, not a crash
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", "ok": False}
    return {"device": str(dev), "steps": steps, "batch": bs, "tolerance": TOLERANCE, "methods": out,
            "all_ok": all(m["ok"] for m in out.values())}


def _parameters(trainer) -> dict:
    named = {f"model.{k}": v.detach() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    if trainer.meta is not None:
        named.update({f"meta.{k}": v.detach() for k, v in trainer.meta.state_dict().items() if v.is_floating_point()})
    return named


# ------------------------------------------------------------------------------------------- 2. bench
def bench(device: str, quick: bool) -> dict:
    from ebomlc.bench import benchmark
    from ebomlc.methods import METHODS

    model = "digits_cnn" if quick else "resnet32"
    (result,) = benchmark(list(METHODS), [model], device, steps=2 if quick else 20, warmup=1 if quick else 3,
                          memory=not quick)
    return result


# ------------------------------------------------------------------------------------------- 3. packing
def packing(device: str, quick: bool, data_dir: str | None) -> dict:
    levels = [1, 2] if quick else [1, 2, 4, 8]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "packing.json"
        dataset = "cifar10" if data_dir and not quick else "digits"
        command = [sys.executable, str(ROOT / "benchmarks" / "packing.py"), "--dataset", dataset, "--device", device,
                   "--levels", *map(str, levels), "--steps", "2" if quick else "30", "--epochs", "1" if quick else "2",
                   "--json", str(file)]
        if dataset == "cifar10":
            command += ["--data_dir", data_dir]
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))})
        if run.returncode != 0:
            return {"error": (run.stderr.strip().splitlines() or ["packing failed"])[-1]}
        result = json.loads(file.read_text())
    bs = 100  # TrainConfig's default batch, what packing.py trains
    for level in result["levels"]:
        level["images_per_s"] = level["steps_per_s"] * bs
    best = max(result["levels"], key=lambda r: r["images_per_s"])
    result.update(best_level=best["workers"], best_speedup=best["images_per_s"] / result["levels"][0]["images_per_s"])
    return result


# ------------------------------------------------------------------------------------------- 4. two epochs
def two_epochs(device: str, quick: bool, data_dir: str | None) -> dict:
    import torch

    from ebomlc.config import TrainConfig
    from ebomlc.data.batches import steps_per_epoch
    from ebomlc.train.loop import Trainer, resolve_device

    dataset = "cifar10" if data_dir else "digits"
    options: dict[str, Any] = {"max_steps_per_epoch": 3, "eval_subset": 200} if quick else {}
    config = TrainConfig(method="ebomlc", dataset=dataset, data_dir=data_dir, epochs=2, device=device, **options)
    dev = resolve_device(device)
    started = time.perf_counter()
    trainer = Trainer(config, device=dev)
    load_s = time.perf_counter() - started
    for _ in range(2):
        trainer.run_epoch()
    last = trainer.history[-1]
    full_steps = steps_per_epoch(len(trainer.y_train), trainer.config.bs)
    evaluated = len(trainer.eval_data.y_test)
    full_test = int(trainer.data.y_test.numel())
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return {"dataset": trainer.data.name, "model": type(trainer.model).__name__, "load_s": load_s,
            "s_per_epoch": last["epoch_time"], "steps_per_epoch": trainer.steps_per_epoch, "full_steps": full_steps,
            "eval_s": last.get("eval_time"), "eval_images": evaluated, "test_images": full_test,
            "test_acc": last.get("test_acc")}


# ------------------------------------------------------------------------------------------- 5. projection
def projection(epochs: dict, benched: dict, packed: dict) -> dict:
    """Minutes of one 120-epoch trial (the default EBOMLC; full epochs, evaluation every epoch on the full test
    set) and GPU-hours of table1_cifar10.yaml at the best packing, each method scaled by its bench step time."""
    per_step = epochs["s_per_epoch"] / epochs["steps_per_epoch"]
    eval_full = (epochs["eval_s"] or 0.0) * epochs["test_images"] / max(epochs["eval_images"], 1)
    trial_min = EPOCHS_PER_TRIAL * (per_step * epochs["full_steps"] + eval_full) / 60
    from tune.spec import load_spec  # YAML only: no Ray

    spec = load_spec(TABLE1, check_trials=False)
    methods = [c["method"] for c in spec.trial_configs()]
    ms = {n: m["ms_per_step"] for n, m in benched["methods"].items()}
    ratio = {n: ms.get(n, ms["ebomlc"]) / ms["ebomlc"] for n in set(methods)}
    trial_minutes = sum(trial_min * ratio[n] for n in methods)
    speedup = packed.get("best_speedup") or 1.0
    return {"trial_minutes_ebomlc": trial_min, "table1_trials": len(methods),
            "table1_gpu_hours_unpacked": trial_minutes / 60, "best_packing": packed.get("best_level", 1),
            "table1_gpu_hours_packed": trial_minutes / 60 / speedup, "epochs_per_trial": EPOCHS_PER_TRIAL}


# ------------------------------------------------------------------------------------------- report
def markdown(r: dict) -> str:
    a, b, p, e, j = r["agreement"], r["bench"], r["packing"], r["two_epochs"], r["projection"]
    lines = [f"### GPU check on {r['device_name']} ({r['device']}; torch {r['torch']}, Python {r['python']}, "
             f"{'quick, ' if r['quick'] else ''}{r['seconds']:.0f} s)", "",
             f"Agreement with the CPU, {a['steps']} steps of every method (digits CNN, batch {a['batch']}, TF32 off; "
             f"tolerance {a['tolerance']['params']:g} relative on parameters and losses): "
             f"{'all within' if a['all_ok'] else 'NOT all within'}.", "",
             "| method | param. rel. diff | loss rel. diff | ms/step | images/s | peak MiB | x CE |",
             "| :-- | --: | --: | --: | --: | --: | --: |"]
    for name, m in a["methods"].items():
        s = b["methods"].get(name, {})
        agree = (f"{m['param_rel_diff']:.1e} | {m['loss_rel_diff']:.1e}" if "error" not in m else f"{m['error']} | -")
        mem = f"{s['peak_mem_mb']:.0f}" if s.get("peak_mem_mb") is not None else "-"
        lines.append(f"| {name} | {agree} | {s.get('ms_per_step', float('nan')):.1f} | "
                     f"{s.get('images_per_s', float('nan')):.0f} | {mem} | {s.get('ratio_to_ce', float('nan')):.2f} |")
    lines += ["", f"Step times: {b['model']}, batch {b['batch']}, median of {b['steps']} interleaved steps.", ""]
    if "error" in p:
        lines.append(f"Packing failed: {p['error']}")
    else:
        lines += ["| concurrent trainings | total images/s | x one |", "| --: | --: | --: |"]
        lines += [f"| {lv['workers']} | {lv['images_per_s']:.0f} | {lv['throughput_vs_one']:.2f} |" for lv in p["levels"]]
        lines += ["", f"Best packing: {p['best_level']} per device ({p['method']} on {p['dataset']})."]
    lines += ["", f"Two epochs of the default EBOMLC on {e['dataset']} ({e['model']}, {e['steps_per_epoch']} of "
                  f"{e['full_steps']} steps an epoch): {e['s_per_epoch']:.1f} s per epoch, evaluation "
                  f"{e['eval_s']:.1f} s on {e['eval_images']} test images.", "",
              f"Projection: one {j['epochs_per_trial']}-epoch EBOMLC trial {j['trial_minutes_ebomlc']:.0f} min; "
              f"`table1_cifar10.yaml` ({j['table1_trials']} trials) {j['table1_gpu_hours_unpacked']:.1f} GPU-hours "
              f"one trial at a time, {j['table1_gpu_hours_packed']:.1f} GPU-hours at {j['best_packing']} per GPU."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default: %(default)s)")
    p.add_argument("--data_dir", help="CIFAR-10 (JPEG folders or pickles) for the 2-epoch run and packing")
    p.add_argument("--quick", action="store_true", help="shrink every part (CI on a CPU)")
    p.add_argument("--json", default="gpu_check.json", help="results (default: %(default)s)")
    p.add_argument("--md", help="also write the markdown block here")
    a = p.parse_args(argv)
    import torch

    from ebomlc.errors import EbomlcError
    from ebomlc.provenance import provenance

    started = time.perf_counter()
    try:
        origin = provenance(a.device)
    except (RuntimeError, AssertionError) as exc:
        print(f"gpu_check: error: device {a.device!r} is not usable here ({str(exc).splitlines()[0]}); "
              f"use --device cpu --quick without a GPU", file=sys.stderr)
        return 2
    try:
        result = {"device": a.device, "device_name": origin["device_name"], "torch": torch.__version__,
                  "python": platform.python_version(), "quick": a.quick, "provenance": origin}
        for part, run in (("agreement", lambda: agreement(a.device)), ("bench", lambda: bench(a.device, a.quick)),
                          ("packing", lambda: packing(a.device, a.quick, a.data_dir)),
                          ("two_epochs", lambda: two_epochs(a.device, a.quick, a.data_dir))):
            t = time.perf_counter()
            result[part] = run()
            print(f"gpu_check: {part} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        result["projection"] = projection(result["two_epochs"], result["bench"], result["packing"])
    except EbomlcError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    result["seconds"] = time.perf_counter() - started
    result["imported"] = sorted(m for m in ("ray", "optuna") if m in sys.modules)
    from ebomlc.writes import save_json, save_text

    save_json(result, a.json)
    text = markdown(result)
    if a.md:
        save_text(text, a.md)
    print(text)
    return 0 if result["agreement"]["all_ok"] and not result["imported"] else 1


if __name__ == "__main__":
    sys.exit(main())
