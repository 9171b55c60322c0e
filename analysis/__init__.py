"""Analysis: rank tables and plots from a study directory, without re-running anything.

>>> import analysis
>>> df = analysis.load_study("runs/studies/quickstart")     # tidy: one row per trial x epoch
>>> final = analysis.final_results(df)                      # one row per trial
>>> table = analysis.rank_table(final)                      # table["mean"], table["rank"], ...
>>> print(analysis.to_markdown(table))
>>> analysis.analyze("runs/studies/quickstart")             # every table and figure -> .../analysis
"""
import importlib

# Public names and their modules, imported on first use so that `ebomlc --help` and
# `ebomlc train` do not pay for pandas and matplotlib.
_EXPORTS = {
    "load_study": "load", "save_parquet": "load", "setting_label": "load",
    "plot_ablation": "plots", "plot_curves": "plots", "plot_label_correction": "plots", "plot_time": "plots",
    "plot_schedule": "plots", "scheduled_params": "results",
    "analyze": "report", "final_results": "results", "missing_cells": "results", "swept_params": "results",
    "rank_table": "tables", "to_latex": "tables", "to_markdown": "tables",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = list(_EXPORTS)
