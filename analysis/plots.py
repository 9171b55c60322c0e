"""Figures of a study; each function draws one figure, writes it to ``path`` (format from the suffix;
``also`` adds copies in more formats, e.g. ``(".pdf",)``) and returns the matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, no display, no global state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ebomlc.errors import EbomlcError

from .results import (by_dataset, class_names, final_results, format_value, method_labels, method_name, one_dataset, param_column,
                      param_name, settings, swept_params, value_key)

ACC_LABEL = "final test accuracy (%)"


def _save(fig: Figure, path: str | Path, also: Sequence[str] = ()) -> Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in [path, *(path.with_suffix(s) for s in also)]:
        fig.savefig(target, dpi=150)
    return fig


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_ablation(final: pd.DataFrame, param: str, path: str | Path, dataset: str | None = None,
                  also: Sequence[str] = ()) -> Figure:
    """Final test accuracy vs the value of swept hyperparameter ``param`` (``rho``, ``K``, ...): one
    panel per method that sweeps it, one line per noise setting, error bars = std over finished trials
    (points only for a sampled search with many values). Other swept hyperparameters, if any, are
    averaged over (named in the panel title)."""
    column = param_column(param)
    final, dataset = one_dataset(final, dataset)
    swept = swept_params(final)
    methods = [m for m, params in swept.items() if column in params]
    if not methods:
        raise EbomlcError(f"{param} is not swept in this study (swept: "
                          f"{', '.join(sorted({param_name(p) for ps in swept.values() for p in ps})) or 'nothing'})")
    fig = Figure(figsize=(4.5 * len(methods), 3.6), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    final = final.assign(_value=final[column].map(lambda v: "none" if value_key(v) is None else value_key(v)))
    done = final[final["finished"]]
    for ax, method in zip(axes, methods):
        part = done[done["method"] == method]
        values = list(dict.fromkeys(final.loc[final["method"] == method, "_value"]))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        values = sorted(values) if numeric else sorted(values, key=str)
        position = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
        for setting in settings(final[final["method"] == method]):
            stats = part[part["setting"] == setting].groupby("_value")["final_test_acc"].agg(["mean", "std"])
            stats = stats.loc[[v for v in values if v in stats.index]]
            if len(stats):
                x = np.array([position[v] for v in stats.index], dtype=float)
                mean, std = stats["mean"].to_numpy(float) * 100, stats["std"].fillna(0).to_numpy(float) * 100
                style = "none" if len(values) > 12 else "-"  # a search: many single values, points only
                ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=setting, linestyle=style)
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(values)), [format_value(v) for v in values])
        others = [param_name(p) for p in swept[method] if p != column]
        title = f"{method_name(method)} on {dataset}" if dataset else method_name(method)
        ax.set_title(title + (f"\n(averaged over {', '.join(others)})" if others else ""), fontsize=10)
        ax.set_xlabel(param_name(column))
        ax.set_ylabel(ACC_LABEL)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(title="noise", fontsize=8)
        else:
            _no_data(ax, "no finished trials")
    return _save(fig, path, also)


def _with_labels(df: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    return df.merge(final[["trial_dir", "method_label"]], on="trial_dir", how="left")


def plot_curves(df: pd.DataFrame, setting: str, path: str | Path, dataset: str | None = None,
                also: Sequence[str] = (), final: pd.DataFrame | None = None) -> Figure:
    """Test accuracy, upper loss and lower loss over epochs at one noise ``setting`` (``df`` from
    :func:`load_study`), one line per method (label): mean over its trials' reported epochs,
    band = std. CE's training loss is drawn as its lower loss (it has no upper level). ``final``:
    :func:`final_results` of ``df`` when already computed (its trials are the ones drawn)."""
    final, dataset = one_dataset(final_results(df) if final is None else final, dataset)
    if setting not in set(final["setting"]):
        raise EbomlcError(f"no trials at setting {setting!r}; the study has: {', '.join(settings(final))}")
    part = _with_labels(df[df["trial_dir"].isin(final["trial_dir"]) & (df["setting"] == setting)], final)
    part = part[part["epoch"].notna()]
    panels = [("test_acc", "test accuracy (%)", 100.0), ("upper_loss", "upper loss", 1.0),
              ("lower_loss", "lower loss", 1.0)]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    labels = method_labels(final[final["setting"] == setting])
    for ax, (metric, ylabel, scale) in zip(axes, panels):
        for i, label in enumerate(labels):
            rows = part[part["method_label"] == label]
            column = metric
            if metric == "lower_loss" and (metric not in rows or rows[metric].isna().all()):
                column = "train_loss"  # CE: one level only
            if column not in rows or rows[column].isna().all():
                continue
            rows = rows[rows[column].notna()]  # epochs without evaluation (eval_every > 1)
            stats = rows.groupby("epoch")[column].agg(["mean", "std"]).sort_index()
            x = stats.index.to_numpy(dtype=float)
            mean, std = stats["mean"].to_numpy(float) * scale, stats["std"].fillna(0).to_numpy(float) * scale
            color = f"C{i % 10}"  # one colour per method in every panel
            ax.plot(x, mean, label=label, color=color, marker="." if len(x) < 20 else None)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not ax.lines:
            _no_data(ax)
    if axes[0].lines:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"{dataset}, {setting}" if dataset else setting)
    return _save(fig, path, also)


def label_correction_matrix(final: pd.DataFrame, method: str, setting: str) -> tuple[np.ndarray, int]:
    """Summed ``[true, corrected]`` counts of ``method`` (label, key or name) at ``setting``, over its
    finished trials (or, if none has finished, every trial that reported a matrix), and their number."""
    rows = final[((final["method_label"] == method) | (final["method_key"] == method) | (final["method"] == method))
                 & (final["setting"] == setting) & final["lc_matrix"].notna()]
    if rows["finished"].any():
        rows = rows[rows["finished"]]
    if rows.empty:
        raise EbomlcError(f"no label-correction matrix for {method} at {setting} "
                          f"(only meta methods report one, at their last epoch)")
    return sum(np.asarray(m, dtype=float) for m in rows["lc_matrix"]), len(rows)


def plot_label_correction(final: pd.DataFrame, method: str, setting: str, path: str | Path,
                          dataset: str | None = None, also: Sequence[str] = ()) -> Figure:
    """Heatmap of the meta model's corrected label vs the true label on the silver set (each row
    normalised to 1), summed over seeds; ``method`` is a method label, key or name."""
    final, dataset = one_dataset(final, dataset)
    counts, n = label_correction_matrix(final, method, setting)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    k = len(counts)
    size = min(3.0 + 0.45 * k, 10.0)
    fig = Figure(figsize=(size + 1.2, size))  # fixed margins: much faster than a layout engine
    fig.subplots_adjust(left=0.8 / (size + 1.2), right=0.98, bottom=0.7 / size, top=1 - 0.75 / size)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{fractions[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if fractions[i, j] > 0.5 else "black")
        names = class_names(final)
        names = names if names is not None and len(names) == k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right"
                      if max(map(len, names)) > 2 else "center", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("corrected label")
    ax.set_ylabel("true label")
    labels = set(final.loc[(final["method_label"] == method) | (final["method_key"] == method), "method_label"])
    name = labels.pop() if len(labels) == 1 else method_name(method)
    accuracy = np.trace(counts) / counts.sum() * 100 if counts.sum() else float("nan")
    ax.set_title(f"{name}, {setting}\ncorrected-label accuracy {accuracy:.1f}% ({n} trial{'s' * (n != 1)})",
                 fontsize=10)
    fig.colorbar(image, ax=ax, label="fraction of the true label's samples")
    return _save(fig, path, also)


def plot_time(final: pd.DataFrame, path: str | Path, also: Sequence[str] = ()) -> Figure:
    """Mean seconds per epoch of each method (label), one panel per dataset; error bars = std over trials."""
    parts = list(by_dataset(final))
    width = max(4.0, 1.0 + 0.9 * final["method_label"].nunique())
    fig = Figure(figsize=(width * len(parts), 3.8), layout="constrained")
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, (name, part) in zip(axes, parts):
        rows = method_labels(part)
        stats = part.groupby("method_label")["seconds_per_epoch"].agg(["mean", "std"]).reindex(rows)
        ax.bar(range(len(rows)), stats["mean"].fillna(0), yerr=stats["std"].fillna(0), capsize=3, color="tab:blue")
        crowded = len(rows) > 4
        ax.set_xticks(range(len(rows)), rows, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlabel("method")
        ax.set_ylabel("seconds per epoch")
        if name is not None:
            ax.set_title(str(name))
        ax.grid(alpha=0.3, axis="y")
        if stats["mean"].isna().all():
            _no_data(ax, "no epochs reported")
    return _save(fig, path, also)
