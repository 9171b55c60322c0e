"""Throughput of several training runs packed on one device (what fractional GPUs in a study do).

For each packing level N, N worker processes each build a ``Trainer`` (same method and data,
different seeds), wait at a common barrier, then train ``--epochs`` epochs of ``--steps`` steps
at the same time. Aggregate throughput is all workers' steps over the slowest worker's time;
the table reports it relative to N = 1, with each worker's peak GPU memory on CUDA.

    python benchmarks/packing.py --dataset cifar10 --data_dir data/cifar10-jpeg --levels 1 2 4 8
    python benchmarks/packing.py --dataset digits --levels 1 2 --steps 5 --json packing.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time


def _worker(rank: int, args: dict, barrier, results) -> None:
    try:
        results.put(_train_packed(rank, args, barrier))
    except BaseException as exc:  # noqa: BLE001 - any failure: free the others and say why
        barrier.abort()
        results.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})


def _train_packed(rank: int, args: dict, barrier) -> dict:
    """One worker: warm up, wait for the others, time ``epochs`` training epochs."""
    import torch

    from ebomlc.config import TrainConfig
    from ebomlc.train.loop import Trainer, resolve_device

    torch.set_num_threads(args["threads"])
    device = resolve_device(args["device"])
    config = TrainConfig(method=args["method"], dataset=args["dataset"], data_dir=args["data_dir"], seed=1 + rank,
                         data_seed=1, epochs=args["epochs"] + 1, max_steps_per_epoch=args["steps"])
    trainer = Trainer(config, device=device)
    trainer.run_epoch(evaluate=False)  # warm-up: allocator, kernels, caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(args["epochs"]):
        trainer.run_epoch(evaluate=False)  # training only: evaluation is not what packing speeds up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"rank": rank, "seconds": seconds, "steps": args["epochs"] * trainer.steps_per_epoch,
            "peak_gpu_mem_mb": peak}


def run_level(n: int, args: dict) -> dict:
    """Train ``n`` workers at once; aggregate steps per second and per-worker figures."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, args, barrier, results)) for r in range(n)]
    for p in procs:
        p.start()
    rows = []
    while len(rows) < n:
        try:
            rows.append(results.get(timeout=1.0))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):  # killed before it could report
                barrier.abort()
                raise RuntimeError(f"a worker of packing level {n} died (exit codes {[p.exitcode for p in procs]})")
    for p in procs:
        p.join()
    errors = sorted((r["rank"], r["error"]) for r in rows if "error" in r)
    if errors:
        raise RuntimeError(f"worker {errors[0][0]} of packing level {n} failed: {errors[0][1]}")
    slowest = max(r["seconds"] for r in rows)
    peaks = [r["peak_gpu_mem_mb"] for r in rows if r["peak_gpu_mem_mb"] is not None]
    return {"workers": n, "steps_per_s": sum(r["steps"] for r in rows) / slowest, "slowest_s": slowest,
            "peak_gpu_mem_mb_per_worker": max(peaks) if peaks else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="ebomlc", help="method every worker trains (default: %(default)s)")
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10", "cifar100"])
    p.add_argument("--data_dir", help="CIFAR data (pickles or a train/ test/ image tree)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4], help="workers per device to compare")
    p.add_argument("--steps", type=int, default=50, help="steps per timed epoch (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per worker (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per worker (default: %(default)s)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    if min(a.levels) < 1 or a.steps < 1 or a.epochs < 1 or a.threads < 1:
        p.error("--levels, --steps, --epochs and --threads must be positive integers")
    args = {k: getattr(a, k) for k in ("method", "dataset", "data_dir", "device", "steps", "epochs", "threads")}
    rows = []
    for n in sorted(set(a.levels)):
        try:
            rows.append(run_level(n, args))
        except RuntimeError as exc:
            p.exit(2, f"packing: error: {exc}\n")
        print(f"{n} worker(s): {rows[-1]['steps_per_s']:.2f} steps/s", file=sys.stderr, flush=True)
    base = rows[0]["steps_per_s"] if rows[0]["workers"] == 1 else None
    print(f"{'workers':>8}{'steps/s':>10}{'x one':>8}{'peak GPU MiB/worker':>21}")
    for r in rows:
        r["throughput_vs_one"] = r["steps_per_s"] / base if base else None
        peak = f"{r['peak_gpu_mem_mb_per_worker']:.0f}" if r["peak_gpu_mem_mb_per_worker"] is not None else "-"
        ratio = f"{r['throughput_vs_one']:.2f}" if base else "-"
        print(f"{r['workers']:>8}{r['steps_per_s']:>10.2f}{ratio:>8}{peak:>21}")
    if a.json:
        import torch

        with open(a.json, "w") as f:
            json.dump({"method": a.method, "dataset": a.dataset, "torch": torch.__version__, "steps": a.steps,
                       "epochs": a.epochs, "levels": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
