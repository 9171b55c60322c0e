"""Step-time benchmark: every method's training step on the same model, batch and device.

Steps are interleaved in one process after warm-up (so machine noise hits all methods alike) and
the median is reported with its ratio to a ``ce`` step of the same batch size. Peak memory of a
step is measured per method in its own process on CPU (resident-set high-water mark above the
pre-step level, sampled every millisecond, with glibc returning freed memory at once) and with ``torch.cuda.max_memory_allocated`` on GPU.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace

import torch

from .config import TrainConfig
from .methods import METHODS, Batch, StepContext
from .models import SmallCNN, resnet32

MODELS = {"resnet32": (3, 32, 10), "digits_cnn": (1, 8, 10)}  # channels, size, classes


def _variant(name: str) -> tuple[str, dict]:
    """``ebomlc:partial`` -> (``ebomlc``, {grad_q_w: partial}); plain names have no overrides."""
    method, _, opt = name.partition(":")
    return method, ({"grad_q_w": opt} if opt else {})


def make_step(name: str, model_name: str, device: torch.device, bs: int = 100, seed: int = 0):
    """A ready ``(run_one_step, images_per_step)`` for method ``name`` on random data."""
    method_name, overrides = _variant(name)
    method = METHODS[method_name]
    channels, size, k = MODELS[model_name]
    torch.manual_seed(seed)
    model = (resnet32(k, channels) if model_name == "resnet32" else SmallCNN(k, channels)).to(device)
    cfg = TrainConfig(method=method_name, dataset="cifar10" if model_name == "resnet32" else "digits",
                      bs=bs, **overrides).resolved()
    meta = method.build_meta(model.feature_dim, k, cfg).to(device) if method.build_meta else None
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    meta_opt = torch.optim.Adam(meta.parameters(), lr=3e-4, amsgrad=True) if meta is not None else None
    peer, peer_opt = None, None
    if method.two_networks:
        peer = (resnet32(k, channels) if model_name == "resnet32" else SmallCNN(k, channels)).to(device)
        peer_opt = torch.optim.SGD(peer.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ctx = StepContext(model, meta, opt, meta_opt, cfg, peer=peer, peer_opt=peer_opt)
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    if method_name == "glc":
        ctx.state["c_hat"] = torch.eye(k, device=device)  # time the (costlier) second phase
    if method.two_networks:  # the main phase: Co-teaching+'s disagreements, DivideMix's MixMatch on a split
        ctx.epoch = cfg.epochs // 2
        ctx.state.update(w_main=torch.rand(bs, generator=g).to(device), w_peer=torch.rand(bs, generator=g).to(device),
                         forget_rate=cfg.corruption_level, disagreement=True)
    x = torch.randn(2 * bs, channels, size, size, generator=g).to(device)
    y = torch.randint(0, k, (2 * bs,), generator=g).to(device)
    index = torch.arange(bs, device=device)
    view = lambda: x[:bs].flip(-1)  # noqa: E731  (a second augmented view: one image-sized copy)
    one_set = method.union_batches or method.gold_only
    batch = (Batch(x[:bs], y[:bs], index=index, second_view=view) if one_set
             else Batch(x[:bs], y[:bs], x[bs:], y[bs:], index=index, second_view=view))
    return (lambda: method.step(ctx, batch)), bs


def _device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(names: list[str], model_name: str, device: torch.device, steps: int, warmup: int) -> dict:
    """Median ms per step of each method, measured interleaved in this process (on CPU with the
    allocator setting of training runs, :func:`retain_freed_cpu_memory`)."""
    if device.type == "cpu":
        from .train.allocator import retain_freed_cpu_memory

        retain_freed_cpu_memory()
    runners = {n: make_step(n, model_name, device)[0] for n in names}
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {n: [] for n in names}
    for _ in range(steps):
        for n, run in runners.items():
            _sync(device)
            t0 = time.perf_counter()
            run()
            _sync(device)
            times[n].append(1000 * (time.perf_counter() - t0))
    return {n: statistics.median(t) for n, t in times.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def step_peak_memory_mb(name: str, model_name: str, device: torch.device, steps: int = 3) -> float:
    """Peak memory a step needs above what is allocated before it, in MiB."""
    run, _ = make_step(name, model_name, device)
    run()  # optimizer state and caches exist from here on
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    import gc

    gc.collect()
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for _ in range(steps):
        run()
    done.set()
    thread.join()
    return max(peak[0] - base, 0) / 2**20


def memory_in_subprocess(name: str, model_name: str, device: str) -> float:
    """Run :func:`step_peak_memory_mb` in a fresh process (CPU peaks are process-wide)."""
    code = ("import sys, torch; from ebomlc.bench import step_peak_memory_mb; torch.set_num_threads(int(sys.argv[4]));"
            "print(step_peak_memory_mb(sys.argv[1], sys.argv[2], torch.device(sys.argv[3])))")
    # Serve every allocation above 16 KiB by mmap and give freed memory straight back, so the
    # resident set follows live tensors instead of the allocator's cache.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", code, name, model_name, device, str(torch.get_num_threads())],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def benchmark(names: list[str], models: list[str], device: str = "auto", steps: int = 20, warmup: int = 3,
              memory: bool = True, bs: int = 100) -> list[dict]:
    """One result object per model: ``{device, model, methods: {name: {ms_per_step, images_per_s,
    peak_mem_mb, ratio_to_ce}}}``."""
    from .train.loop import resolve_device

    dev = resolve_device(device)
    names = ["ce"] + [n for n in names if n != "ce"]
    label = _device_label(dev)
    results = []
    for model_name in models:
        ms = time_steps(names, model_name, dev, steps, warmup)
        methods = {}
        for n in names:
            mem = None
            if memory:
                mem = (step_peak_memory_mb(n, model_name, dev) if dev.type == "cuda"
                       else memory_in_subprocess(n, model_name, str(dev)))
            methods[n] = {"ms_per_step": ms[n], "images_per_s": 1000 * bs / ms[n], "peak_mem_mb": mem,
                          "ratio_to_ce": ms[n] / ms["ce"]}
        ce_mem = methods["ce"]["peak_mem_mb"]
        for m in methods.values():
            m["mem_ratio_to_ce"] = (m["peak_mem_mb"] / ce_mem) if memory and ce_mem else None
        results.append({"device": label, "model": model_name, "torch": torch.__version__, "batch": bs,
                        "steps": steps, "methods": methods})
    return results


def time_epochs(names: list[str], dataset: str = "digits", data_dir: str | None = None, device: str = "auto",
                rounds: int = 2, max_steps: int | None = None, bs: int = 100) -> dict:
    """Seconds per training epoch of each method through the real ``Trainer`` on one shared noisy
    dataset; epochs run interleaved across methods, ``rounds`` times, the first round is warm-up
    (with ``rounds`` = 1 it is the measurement). Evaluation is not included."""
    from .train.loop import Trainer, load_data, resolve_device

    dev = resolve_device(device)
    names = ["ce"] + [n for n in names if n != "ce"]
    configs = {}
    for n in names:
        method, overrides = _variant(n)
        configs[n] = TrainConfig(method=method, dataset=dataset, data_dir=data_dir, bs=bs, epochs=max(rounds, 2),
                                 max_steps_per_epoch=max_steps, **overrides).resolved()
    data = load_data(configs["ce"], dev)  # identical noisy data for every method
    trainers = {n: Trainer(c, data, dev) for n, c in configs.items()}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for n, trainer in trainers.items():
            seconds[n].append(trainer.run_epoch(evaluate=False)["epoch_time"])
    per_epoch = {n: statistics.median(s[1:] if rounds > 1 else s) for n, s in seconds.items()}
    steps = {n: trainer.steps_per_epoch for n, trainer in trainers.items()}
    ce_per_step = per_epoch["ce"] / steps["ce"]  # ce trains on silver and gold together: compare per step
    methods = {n: {"s_per_epoch": per_epoch[n], "steps": steps[n], "silver_images_per_s": steps[n] * bs / per_epoch[n],
                   "ratio_to_ce": per_epoch[n] / steps[n] / ce_per_step} for n in names}
    return {"device": _device_label(dev), "dataset": dataset, "torch": torch.__version__, "batch": bs, "rounds": rounds,
            "max_steps_per_epoch": max_steps, "methods": methods}


def format_epochs(result: dict) -> str:
    lines = [f"whole epochs on {result['dataset']}, {result['device']}, batch {result['batch']}, "
             f"median of {max(result['rounds'] - 1, 1)} timed epoch(s) after warm-up",
             f"{'method':<16}{'s/epoch':>10}{'steps':>8}{'silver img/s':>14}{'x ce/step':>11}"]
    for n, m in result["methods"].items():
        lines.append(f"{n:<16}{m['s_per_epoch']:>10.2f}{m['steps']:>8}{m['silver_images_per_s']:>14.0f}"
                     f"{m['ratio_to_ce']:>11.2f}")
    return "\n".join(lines) + "\n"


def format_table(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r['model']} on {r['device']}, batch {r['batch']}, median of {r['steps']} interleaved steps")
        lines.append(f"{'method':<16}{'ms/step':>10}{'img/s':>10}{'x ce':>8}{'peak MiB':>10}{'mem x ce':>10}")
        for n, m in r["methods"].items():
            mem = f"{m['peak_mem_mb']:.0f}" if m["peak_mem_mb"] is not None else "-"
            memr = f"{m['mem_ratio_to_ce']:.2f}" if m.get("mem_ratio_to_ce") else "-"
            lines.append(f"{n:<16}{m['ms_per_step']:>10.1f}{m['images_per_s']:>10.0f}{m['ratio_to_ce']:>8.2f}"
                         f"{mem:>10}{memr:>10}")
        lines.append("")
    return "\n".join(lines)


def run_bench_command(a) -> int:
    """``ebomlc bench``: time, print the table, optionally write JSON."""
    from .errors import EbomlcError

    unknown = [n for n in a.methods if _variant(n)[0] not in METHODS]
    if unknown:
        raise EbomlcError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if a.steps < 1 or a.epoch_rounds < 1 or (a.epoch_steps is not None and a.epoch_steps < 1):
        raise EbomlcError("--steps, --epoch_rounds and --epoch_steps must be positive integers")
    if a.warmup < 0:
        raise EbomlcError("--warmup must be 0 or more")
    if not a.models and not a.epochs:
        raise EbomlcError("nothing to time: give --models and/or --epochs")
    results = []
    if a.models:
        results = benchmark(a.methods, a.models, a.device, a.steps, a.warmup, memory=not a.no_memory)
        print(format_table(results))
    if a.epochs:
        epochs = time_epochs(a.methods, a.epochs, a.data_dir, a.device, a.epoch_rounds, a.epoch_steps)
        print(format_epochs(epochs))
        results.append({"model": f"epoch:{a.epochs}", **epochs})
    if a.json:
        from .train.checkpoint import save_json

        save_json(results, a.json)
        print(f"wrote {a.json}")
    return 0
