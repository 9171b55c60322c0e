"""Helpers shared by the study tests: the repository root, a study directory's trials, a benchmark script."""
import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trial_dirs(path: Path) -> list[Path]:
    """The trial directories of a study, sorted (those with a ``params.json``)."""
    return sorted(p.parent for p in Path(path).glob("*/params.json"))


def results(trial: Path) -> list[dict]:
    """A trial's ``result.json`` rows, one per reported epoch ([] before the first)."""
    file = trial / "result.json"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.exists() else []
