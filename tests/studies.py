"""Helpers shared by the study tests: the repository root and a study directory's trials."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trial_dirs(path: Path) -> list[Path]:
    """The trial directories of a study, sorted (those with a ``params.json``)."""
    return sorted(p.parent for p in Path(path).glob("*/params.json"))


def results(trial: Path) -> list[dict]:
    """A trial's ``result.json`` rows, one per reported epoch ([] before the first)."""
    file = trial / "result.json"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.exists() else []
