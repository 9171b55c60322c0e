"""The CPU CIFAR-10 benchmark's rank tables over its three studies (variants_cifar10_cpu, table1_cifar10_cpu,
schedules_cifar10_cpu; same data, noise, seeds and recipe), from their final CSVs in docs/results.

    python benchmarks/cifar10_cpu_table.py            # -> docs/results/cifar10_cpu_all_rank_table.md

Checks first that CE, which two of the studies run, gave the same numbers in both (identical data)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.results import METHOD_ORDER  # noqa: E402
from analysis.tables import rank_table, to_markdown  # noqa: E402

RESULTS = ROOT / "docs" / "results"
STUDIES = ("variants_cifar10_cpu", "table1_cifar10_cpu", "schedules_cifar10_cpu")
#: The one row per method of the paper's tables: published defaults, EBOMLC's preset.
DEFAULTS = {"CE": "CE", "Gold only": "Gold only", "Co-teaching+ (init 1, ramp 1: scaled defaults)": "Co-teaching+",
            "DivideMix (warm-up 1: scaled default)": "DivideMix", "GLC": "GLC", "L2RW": "L2RW", "MW-Net": "MW-Net",
            "PMW-Net": "PMW-Net", "MLC": "MLC", "MLC-D": "MLC-D", "EBOMLC (inner_step, the preset)": "EBOMLC"}


def _label(row: pd.Series) -> str:
    """The row's method with the schedule or variant it ran (scaled defaults: the published epochs at 8 of 200)."""
    if row.method == "coteachingplus":
        init, ramp = (1 if pd.isna(v) else int(v) for v in (row.coteach_init_epochs, row.coteach_gradual_epochs))
        return f"Co-teaching+ (init {init}, ramp {ramp}" + (": scaled defaults)" if init == ramp == 1 else ")")
    if row.method == "dividemix":
        warmup = row.get("dividemix_warmup")
        return "DivideMix (warm-up " + ("1: scaled default)" if pd.isna(warmup) else f"{int(warmup)})")
    if row.method == "ebomlc":
        variant = str(row.variant)
        return f"EBOMLC ({variant}" + (", the preset)" if variant == "inner_step" else ")")
    return str(row.method_label)


def load() -> pd.DataFrame:
    frames = {name: pd.read_csv(RESULTS / f"{name}_final.csv") for name in STUDIES}
    ce = [f[f.method == "ce"].sort_values(["corruption_level", "seed"]).final_test_acc.tolist()
          for f in frames.values() if (f.method == "ce").any()]
    if any(run != ce[0] for run in ce):
        raise SystemExit(f"CE differs between the studies ({ce}): they did not see identical data")
    first_ce = next(name for name, f in frames.items() if (f.method == "ce").any())  # CE's rows once, from there
    final = pd.concat([f if name == first_ce else f[f.method != "ce"] for name, f in frames.items()],
                      ignore_index=True)
    final["method_label"] = final.apply(_label, axis=1)
    final["finished"] = final["finished"].astype(bool)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return final.sort_values(["method", "method_label"], kind="stable",
                             key=lambda c: c.map(order) if c.name == "method" else c).reset_index(drop=True)


def main() -> None:
    final = load()
    paper = final[final.method_label.isin(DEFAULTS)].copy()
    paper["method_label"] = paper.method_label.map(DEFAULTS)
    text = ["# The CPU CIFAR-10 benchmark: every method", "",
            "CIFAR-10 (JPEG) at 8x8 (small CNN), a class-balanced 20,000-image subset, 2% gold (400), 8 epochs, "
            "a fixed 2,000-image test subset; final test accuracy (%), mean ± std over seeds 1-2; one thread a "
            "trial on a 2-core x86-64 CPU (times: shared with other trials). Studies: " + ", ".join(
                f"`tune/studies/{s}.yaml`" for s in STUDIES) + "; CE ran in two of them with identical numbers.",
            "", "## One row per method (published defaults, EBOMLC's preset)", "", to_markdown(rank_table(paper)),
            "", "## Every run (schedules and variants)", "", to_markdown(rank_table(final)), ""]
    out = RESULTS / "cifar10_cpu_all_rank_table.md"
    out.write_text("\n".join(text))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
