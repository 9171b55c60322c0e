"""Figures of a study; each function draws one figure, writes it to ``path`` (format from the suffix;
``also`` adds copies in more formats, e.g. ``(".pdf",)``) and returns the matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, no display, no global state.
"""
from __future__ import annotations

import io

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ebomlc.errors import EbomlcError
from ebomlc.writes import save_bytes

from .load import setting_order
from .results import (by_dataset, class_names, scheduled_params, final_results, selection, format_value, method_labels, method_name, one_dataset, param_column,
                      param_name, settings, swept_params, value_key)

ACC_LABEL = "final test accuracy (%)"


def _save(fig: Figure, path: str | Path, also: Sequence[str] = ()) -> Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in [path, *(path.with_suffix(s) for s in also)]:
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=150, format=target.suffix.lstrip("."))
        save_bytes(buffer.getvalue(), target)  # atomic; a full disk is one StorageError line naming the file
    return fig


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


SEARCH_VALUES = 12  # more distinct values of the swept hyperparameter: a sampled search, points only
MARKERS = "os^Dv<>ph*P"


def _key(value: Any) -> Any:
    """A config value as a group key (``None`` as ``"none"``, which groupby keeps)."""
    key = value_key(value)
    return "none" if key is None else key


def _order(key: Any) -> tuple:
    """Sort key of a group key: numbers first (numerically), then text."""
    numeric = isinstance(key, (int, float)) and not isinstance(key, bool)
    return (0, float(key), "") if numeric else (1, 0.0, str(key))


def ablation_stats(final: pd.DataFrame, param: str, method: str) -> pd.DataFrame:
    """Final test accuracy (%) of ``method``'s finished trials per noise setting, value of each OTHER swept
    hyperparameter and value of ``param``, so that each row aggregates over seeds only. Columns:
    ``setting``, the other swept hyperparameters (config column names, values as :func:`value_key`, None
    as ``"none"``), ``value`` (of ``param``), ``mean``, ``std`` (0 for a single seed), ``n``; rows in
    table order (setting, other values, value)."""
    column = param_column(param)
    rows = final[(final["method"] == method) & final["finished"]]
    others = [p for p in swept_params(final).get(method, []) if p != column]
    keys = pd.DataFrame({"setting": rows["setting"], **{p: rows[p].map(_key) for p in others},
                         "value": rows[column].map(_key), "acc": rows["final_test_acc"] * 100})
    stats = keys.groupby(["setting", *others, "value"], sort=False)["acc"].agg(["mean", "std", "count"])
    stats = stats.reset_index().rename(columns={"count": "n"})
    stats["std"] = stats["std"].fillna(0.0)
    order = sorted(range(len(stats)), key=lambda i: (setting_order(stats["setting"].iloc[i]),
                                                     *(_order(stats[c].iloc[i]) for c in [*others, "value"])))
    return stats.iloc[order].reset_index(drop=True)


def _line_label(setting: str, others: Sequence[str], values: Sequence[Any]) -> str:
    """``uniform-40%, rho=0.5, K=3``: a noise setting and the values of the other swept hyperparameters."""
    return ", ".join([setting, *(f"{param_name(p)}={format_value(v)}" for p, v in zip(others, values))])


def _counts_text(counts: Sequence[int]) -> str:
    """``n = 2`` or ``n = 1-2`` (finished trials per point)."""
    low, high = min(counts), max(counts)
    return f"n = {low}" if low == high else f"n = {low}\u2013{high}"


def _ablation_caption(counts: Sequence[int], others: Sequence[str], search: bool) -> str:
    """What a point, a line and an error bar of the ablation figure are."""
    if not counts:
        return "no finished trials"
    bars = f"error bars: std over seeds ({_counts_text(counts)} finished trial{'s' * (max(counts) != 1)} per point)"
    names = ", ".join(param_name(p) for p in others)
    if search:
        what = "points: one per configuration" + (f" (values of {names} fixed)" if names else "")
    elif names:
        what = f"one line per noise setting and value of the other swept hyperparameters ({names}), held fixed"
    else:
        what = "one line per noise setting"
    return f"{what}\n{bars}"


def _colors(n: int) -> list:
    """``n`` distinguishable line colours."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = colormaps["tab20"] if n <= 20 else colormaps["turbo"]
    return [cmap(i) if n <= 20 else cmap(i / (n - 1)) for i in range(n)]


def _legend_outside(ax, title: str | None = None) -> None:
    """The axes' legend to the right of it, in more columns when long."""
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              ncol=1 + (n - 1) // 18, fontsize=7 if n > 8 else 8, title_fontsize=8)


def _ablation_lines(final: pd.DataFrame, column: str, method: str,
                    others: list[str]) -> tuple[list[Any], list[str], list[tuple[tuple, pd.DataFrame]]]:
    """The sorted values of ``column`` for ``method``, the keys that make a line (``setting`` and, unless a
    sampled search, the other swept hyperparameters) and the lines: ``(their values, points)``."""
    values = sorted(dict.fromkeys(final.loc[final["method"] == method, column].map(_key)), key=_order)
    stats = ablation_stats(final, column, method)
    group = ["setting"] if len(values) > SEARCH_VALUES else ["setting", *others]
    lines = [(keys if isinstance(keys, tuple) else (keys,), points)
             for keys, points in stats.groupby(group, sort=False)] if len(stats) else []
    return values, group, lines


def plot_ablation(final: pd.DataFrame, param: str, path: str | Path, dataset: str | None = None,
                  also: Sequence[str] = ()) -> Figure:
    """Final test accuracy vs the value of swept hyperparameter ``param`` (``rho``, ``K``, ...): one
    panel per method that sweeps it, one line per noise setting and combination of the values of the
    method's other swept hyperparameters (each point aggregates over seeds only, see
    :func:`ablation_stats`), error bars = std over seeds (finished trials), legend to the right, a caption
    below. A sampled search (many values) draws points only, one colour per noise setting."""
    column = param_column(param)
    final, dataset = one_dataset(final, dataset)
    swept = swept_params(final)
    methods = [m for m, params in swept.items() if column in params]
    if not methods:
        raise EbomlcError(f"{param} is not swept in this study (swept: "
                          f"{', '.join(sorted({param_name(p) for ps in swept.values() for p in ps})) or 'nothing'})")
    others = {m: [p for p in swept[m] if p != column] for m in methods}
    panels = [(m, *_ablation_lines(final, column, m, others[m])) for m in methods]
    labels = [_line_label(keys[0], group[1:], keys[1:]) for _, _, group, lines in panels for keys, _ in lines]
    most = max([len(lines) for *_, lines in panels] + [1])
    legend_width = (1 + (most - 1) // 18) * (0.6 + 0.055 * max(map(len, labels), default=10))
    fig = Figure(figsize=((4.5 + legend_width) * len(methods), max(3.6, 1.6 + 0.17 * min(most, 18))),
                 layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    counts: list[int] = []
    for ax, (method, values, group, lines) in zip(axes, panels):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        position = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
        marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(dict.fromkeys(k[0] for k, _ in lines))}
        style = "none" if len(values) > SEARCH_VALUES else "-"  # a search: many single values, points only
        for color, (keys, points) in zip(_colors(len(lines)), lines):
            x = np.array([position[v] for v in points["value"]], dtype=float)
            ax.errorbar(x, points["mean"].to_numpy(float), yerr=points["std"].to_numpy(float), capsize=3,
                        marker=marker[keys[0]], markersize=4, color=color, linestyle=style,
                        label=_line_label(keys[0], group[1:], keys[1:]))
            counts += [int(n) for n in points["n"]]
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(values)), [format_value(v) for v in values])
        ax.set_title(f"{method_name(method)} on {dataset}" if dataset else method_name(method), fontsize=10)
        ax.set_xlabel(param_name(column))
        ax.set_ylabel(ACC_LABEL)
        ax.grid(alpha=0.3)
        if ax.lines:
            _legend_outside(ax, ", ".join(["noise", *(param_name(p) for p in group[1:])]))
        else:
            _no_data(ax, "no finished trials")
    searched = any(len(values) > SEARCH_VALUES for _, values, _, _ in panels)
    caption = _ablation_caption(counts, list(dict.fromkeys(p for m in methods for p in others[m])), searched)
    fig.supxlabel(caption, fontsize=8, color="dimgray")
    return _save(fig, path, also)


def _with_labels(df: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    return df.merge(final[["trial_dir", "method_label"]], on="trial_dir", how="left")


def plot_curves(df: pd.DataFrame, setting: str, path: str | Path, dataset: str | None = None,
                also: Sequence[str] = (), final: pd.DataFrame | None = None) -> Figure:
    """Test accuracy, upper loss and lower loss over epochs at one noise ``setting`` (``df`` from
    :func:`load_study`), one line per method (label): mean over its trials' reported epochs,
    band = std. CE's training loss is drawn as its lower loss (it has no upper level); one legend below
    the panels. ``final``: :func:`final_results` of ``df`` when already computed (its trials are the ones drawn)."""
    final, dataset = one_dataset(final_results(df) if final is None else final, dataset)
    if setting not in set(final["setting"]):
        raise EbomlcError(f"no trials at setting {setting!r}; the study has: {', '.join(settings(final))}")
    part = _with_labels(df[df["trial_dir"].isin(final["trial_dir"]) & (df["setting"] == setting)], final)
    part = part[part["epoch"].notna()]
    panels = [("test_acc", "test accuracy (%)", 100.0), ("upper_loss", "upper loss", 1.0),
              ("lower_loss", "lower loss", 1.0)]
    labels = method_labels(final[final["setting"] == setting])
    columns = max(1, min(len(labels), int(13 // (0.5 + 0.075 * max(map(len, labels), default=1)))))
    fig = Figure(figsize=(13, 3.6 + 0.2 * -(-len(labels) // columns)), layout="constrained")
    axes = fig.subplots(1, 3)
    colors = _colors(len(labels))  # one colour per method in every panel
    for ax, (metric, ylabel, scale) in zip(axes, panels):
        for color, label in zip(colors, labels):
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
            ax.plot(x, mean, label=label, color=color, marker="." if len(x) < 20 else None)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not ax.lines:
            _no_data(ax)
    handles = {line.get_label(): line for ax in axes for line in ax.lines}
    if handles:  # below the panels, never on the data
        shown = [label for label in labels if label in handles]
        fig.legend([handles[label] for label in shown], shown, loc="outside lower center", ncol=columns, fontsize=8)
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


def plot_schedule(df: pd.DataFrame, param: str, path: str | Path, final: pd.DataFrame | None = None,
                  also: Sequence[str] = ()) -> Figure:
    """The value of ``param`` in force at each epoch (``current_<param>``) of every trial of a population
    (thin grey lines) and of the best trial (bold; by the study's metric, e.g. final ``val_acc``, and by final
    test accuracy only when the study has no other), with the best trial's test accuracy on a second axis."""
    column = f"current_{param}"
    if column not in df.columns:
        raise EbomlcError(f"no per-epoch values of {param} in this study (recorded only for options a "
                          f"population schedule mutates; recorded: {', '.join(scheduled_params(df)) or 'none'})")
    final = final_results(df) if final is None else final
    metric, by, high = selection(final)
    scores = final[by].where(final["final_test_acc"].notna())
    best = final.loc[scores.idxmax() if high else scores.idxmin(), "trial_dir"] if scores.notna().any() else None
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    rows = df[df["epoch"].notna() & df[column].notna()]
    for trial, part in rows.groupby("trial_dir", sort=False):
        part = part.sort_values("epoch")
        if trial != best:
            ax.step(part["epoch"], part[column], where="post", color="0.6", linewidth=0.8, alpha=0.8)
    if best is not None:
        part = rows[rows["trial_dir"] == best].sort_values("epoch")
        ax.step(part["epoch"], part[column], where="post", color="C0", linewidth=2.2,
                label=f"best trial by {metric} (test {final.loc[final['trial_dir'] == best, 'final_test_acc'].iloc[0] * 100:.2f}%)")
        acc = ax.twinx()
        acc.plot(part["epoch"], part["test_acc"] * 100, color="C1", linewidth=1.2, linestyle="--",
                 label="best trial's test accuracy")
        acc.set_ylabel("test accuracy (%)")
        fig.legend(loc="outside lower center", ncol=3, fontsize=8,
                   handles=[*ax.get_legend_handles_labels()[0], *acc.get_legend_handles_labels()[0],
                            ax.plot([], [], color="0.6", linewidth=0.8)[0]],
                   labels=[*ax.get_legend_handles_labels()[1], *acc.get_legend_handles_labels()[1], "population"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{param_name(param)} in force")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if param == "meta_lr":
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(f"{param_name(param)} over training: the population's schedules", fontsize=10)
    return _save(fig, path, also)
