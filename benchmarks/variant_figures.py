"""Learning curves of a few cases of a variant study, for docs/variants.md.

    python benchmarks/variant_figures.py runs/studies/variants_digits docs/figures \
        --labels CE MLC MLC-D "EBOMLC (variant=paper)" "EBOMLC (variant=reference)"

Writes ``<out>/<study>_<setting>.png`` (test accuracy, upper and lower loss per epoch; mean over seeds,
band = std) for every noise setting of the study, with only the named method labels drawn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.load import load_study
from analysis.plots import plot_curves
from analysis.results import final_results, settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", help="study directory")
    p.add_argument("out", help="output directory")
    p.add_argument("--labels", nargs="+", required=True, help="method labels as the rank table names them")
    a = p.parse_args()
    df = load_study(a.study)
    final = final_results(df)
    unknown = sorted(set(a.labels) - set(final["method_label"]))
    if unknown:
        raise SystemExit(f"variant_figures: no trials labelled {unknown}; the study has "
                         f"{sorted(set(final['method_label']))}")
    keep = final[final["method_label"].isin(a.labels)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for setting in settings(keep):
        path = out / f"{Path(a.study).name}_{setting.replace('%', '')}.png"
        plot_curves(df[df["trial_dir"].isin(keep["trial_dir"])], setting, path, final=keep)
        print(path)


if __name__ == "__main__":
    main()
