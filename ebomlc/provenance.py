"""Where a number came from: the software and hardware of a run, recorded in ``config.json``,
``summary.json`` and every study trial's results (as ``prov_*`` values).

No Ray import: its version is read from the installed package's metadata (None where Ray is absent).
"""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The keys of :func:`provenance`, in order; a rank table compares its trials on ``COMPARED``.
KEYS = ("ebomlc_version", "git_commit", "git_dirty", "torch_version", "ray_version", "python_version", "device",
        "device_name", "device_count", "threads", "host")
COMPARED = ("device_name", "device_count", "ebomlc_version", "git_commit", "git_dirty", "torch_version",
            "ray_version", "python_version")
#: Prefix of the provenance values in a trial's reported results.
PREFIX = "prov_"


def provenance(device: Any = "cpu", threads: int | None = None) -> dict[str, Any]:
    """``ebomlc_version``, ``git_commit`` and ``git_dirty`` (None outside a git checkout), the torch, Ray and
    Python versions, ``device`` (``cpu``, ``cuda:0``), ``device_name`` (the CPU model or the GPU's name),
    ``device_count`` (CPU cores or visible GPUs), ``threads`` (torch's, unless given) and ``host``."""
    import torch

    from . import __version__

    kind = torch.device(device).type
    if kind == "cuda":
        index = torch.device(device).index or 0
        name, count = torch.cuda.get_device_name(index), torch.cuda.device_count()
    else:
        import os

        name, count = cpu_model(), os.cpu_count()
    commit, dirty = git_state()
    return {"ebomlc_version": __version__, "git_commit": commit, "git_dirty": dirty, "torch_version": torch.__version__,
            "ray_version": _version("ray"), "python_version": platform.python_version(), "device": str(device),
            "device_name": name, "device_count": count,
            "threads": int(threads if threads is not None else torch.get_num_threads()), "host": socket.gethostname()}


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as ``prov_<key>`` values (a trial's reported results)."""
    return {PREFIX + key: value for key, value in record.items()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """The commit of the checkout ebomlc runs from and whether tracked files differ from it (None, None
    for an installed package or where git is missing)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(record: dict[str, Any]) -> str:
    """``NVIDIA H100 x1, torch 2.13.0, Ray 2.60.0, Python 3.12.3, ebomlc 0.1.0 (commit 1a2b3c4, dirty)``."""
    commit = record.get("git_commit")
    source = f" (commit {str(commit)[:10]}{', dirty' if str(record.get('git_dirty')) == 'True' else ''})" if commit else ""
    return (f"{record.get('device_name')} x{record.get('device_count')}, torch {record.get('torch_version')}, "
            f"Ray {record.get('ray_version')}, Python {record.get('python_version')}, "
            f"ebomlc {record.get('ebomlc_version')}{source}")


if __name__ == "__main__":  # python -m ebomlc.provenance: this machine's record
    import json

    json.dump(provenance(sys.argv[1] if len(sys.argv) > 1 else "cpu"), sys.stdout, indent=2)
    print()
