"""Rank tables (the paper's Tables I and II): methods x noise settings, mean ± std over seeds,
best per column in bold, average rank and mean training time; rendered as Markdown or LaTeX.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import pandas as pd

from .load import NOISE_NAMES
from .results import method_labels, one_dataset, settings

#: Statistic blocks of a rank table (first column level); each has one column per setting.
STATS = ("mean", "std", "n", "rank", "best")
MISSING_MD, MISSING_TEX = "–", "--"
_TIE_DECIMALS = 10  # means equal to this many decimals tie (no float noise in ranks)


def rank_table(final: pd.DataFrame, dataset: str | None = None, metric: str = "final_test_acc") -> pd.DataFrame:
    """Rank table of the finished trials of one dataset (``final`` from :func:`final_results`).

    Index: method labels (methods, with their swept values). Columns: a MultiIndex ``(stat, setting)`` with
    stat in ``mean, std, n, rank, best``, then ``avg_rank`` and ``time`` (mean seconds of training
    of a finished trial); so ``table["mean"]`` is the methods x settings frame of means and
    ``table["avg_rank"]`` a Series. Ranks are per setting, 1 = best, ties share the average rank;
    ``best`` marks every method tied for the best mean. Cells without finished trials are NaN.
    """
    final, dataset = one_dataset(final, dataset)
    rows, columns = method_labels(final), settings(final)
    done = final[final["finished"]]
    stats = done.groupby(["method_label", "setting"])[metric].agg(["mean", "std", "count"])
    blocks = {stat: stats[source].unstack().reindex(index=rows, columns=columns)
              for stat, source in (("mean", "mean"), ("std", "std"), ("n", "count"))}
    blocks["n"] = blocks["n"].fillna(0).astype(int)
    rounded = blocks["mean"].astype(float).round(_TIE_DECIMALS)
    blocks["rank"] = rounded.rank(axis=0, method="average", ascending=False)
    blocks["best"] = rounded.eq(rounded.max(axis=0), axis=1) & rounded.notna()
    table = pd.concat(blocks, axis=1, names=["stat", "setting"])
    table[("avg_rank", "")] = blocks["rank"].mean(axis=1)
    table[("time", "")] = done.groupby("method_label")["train_time"].mean().reindex(rows)
    table.index.name = "method"
    table.attrs = {"dataset": dataset, "metric": metric}
    return table


def format_seconds(seconds: float, missing: str = MISSING_MD) -> str:
    """``42.0 s``, ``12.5 min``, ``3.2 h`` (``missing`` for none)."""
    if seconds is None or math.isnan(seconds):
        return missing
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cells(table: pd.DataFrame, pm: str, missing: str, scale: float, digits: int) -> pd.DataFrame:
    """Text of each accuracy cell (``mean pm std``; the mean alone for a single seed)."""
    mean, std = table["mean"], table["std"]

    def cell(m: float, s: float) -> str:
        if pd.isna(m):
            return missing
        text = f"{m * scale:.{digits}f}"
        return text if pd.isna(s) else f"{text}{pm}{s * scale:.{digits}f}"

    return pd.DataFrame([[cell(mean.iat[i, j], std.iat[i, j]) for j in range(mean.shape[1])]
                         for i in range(mean.shape[0])], index=mean.index, columns=mean.columns)


def _best_rank(table: pd.DataFrame) -> pd.Series:
    ranks = table["avg_rank"].round(_TIE_DECIMALS)
    return ranks.eq(ranks.min()) & ranks.notna()


def _rows(table: pd.DataFrame, pm: str, missing: str, bold: Callable[[str], str], scale: float,
          digits: int) -> list[list[str]]:
    """Text of each row: method, accuracy cells, average rank, time; the best ones through ``bold``."""
    cells = _cells(table, pm, missing, scale, digits)
    best, best_rank = table["best"], _best_rank(table)
    rows = []
    for i, name in enumerate(cells.index):
        row = [str(name), *(bold(c) if best.iat[i, j] else c for j, c in enumerate(cells.iloc[i]))]
        rank = table["avg_rank"].iat[i]
        rank_text = missing if pd.isna(rank) else f"{rank:.2f}"
        rows.append(row + [bold(rank_text) if best_rank.iat[i] else rank_text,
                           format_seconds(table["time"].iat[i], missing)])
    return rows


def to_markdown(table: pd.DataFrame, scale: float = 100.0, digits: int = 2) -> str:
    """The rank table as a Markdown (GitHub) table: accuracy in % (``scale``), best in bold."""
    header = ["Method", *table["mean"].columns, "Avg. Rank", "Time"]
    lines = ["| " + " | ".join(header) + " |", "| :-- | " + " | ".join(["--:"] * (len(header) - 1)) + " |"]
    for name, *row in _rows(table, " ± ", MISSING_MD, "**{}**".format, scale, digits):
        lines.append("| " + " | ".join([_md_escape(name), *row]) + " |")
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters of plain text."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX_SPECIAL[m.group()], text)


def _setting_groups(labels: list[str]) -> list[tuple[str, list[str]]] | None:
    """``[("Uniform", ["0%", "20%"]), ("Flip", ["20%"])]`` when every label is ``<noise>-<level>``."""
    groups: list[tuple[str, list[str]]] = []
    for label in labels:
        name, sep, level = label.rpartition("-")
        if not sep or name not in NOISE_NAMES.values():
            return None
        if groups and groups[-1][0] == name.capitalize():
            groups[-1][1].append(level)
        else:
            groups.append((name.capitalize(), [level]))
    return groups


def to_latex(table: pd.DataFrame, scale: float = 100.0, digits: int = 2) -> str:
    """The rank table as a LaTeX ``tabular`` fragment (booktabs rules; noise types as grouped headers)."""
    columns = list(table["mean"].columns)
    lines = [r"\begin{tabular}{l" + "c" * len(columns) + "cr}", r"\toprule"]
    groups = _setting_groups(columns)
    if groups:
        heads, rules, start = [], [], 2
        for name, levels in groups:
            heads.append(rf"\multicolumn{{{len(levels)}}}{{c}}{{{tex_escape(name)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(levels) - 1}}}")
            start += len(levels)
        lines += [" & ".join(["", *heads, "", ""]) + r" \\", "".join(rules)]
        names = [level for _, levels in groups for level in levels]
    else:
        names = columns
    lines += [" & ".join(["Method", *map(tex_escape, names), "Avg. Rank", "Time"]) + r" \\", r"\midrule"]
    for name, *row in _rows(table, r" $\pm$ ", MISSING_TEX, r"\textbf{{{}}}".format, scale, digits):
        lines.append(" & ".join([tex_escape(name), *row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
