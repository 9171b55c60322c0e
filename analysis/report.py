"""``analyze``: every table and figure of a study directory into one output directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd

from ebomlc.errors import EbomlcError, StorageError
from ebomlc.provenance import COMPARED, describe
from ebomlc.provenance import PREFIX as PROVENANCE_PREFIX
from ebomlc.writes import save_text

from .load import STATUSES, load_study, save_parquet
from .plots import plot_ablation, plot_curves, plot_label_correction, plot_schedule, plot_time
from .results import (by_dataset, class_names, datasets, final_results, missing_cells, param_name,
                      scheduled_params, selection, settings, swept_params)
from .tables import rank_table, to_latex, to_markdown

MAX_ECHOED_MISSING = 20


def _slug(text: str) -> str:
    """A setting or dataset as a file-name part: ``uniform-40% -> uniform-40``."""
    return "".join(c if c.isalnum() or c in "._=+-" else "-" for c in str(text).replace("%", "")).strip("-")


def status_line(final: pd.DataFrame) -> str:
    """``12 trials: 10 finished, 1 unfinished, 1 errored``."""
    counts = final["status"].value_counts()
    parts = [f"{counts[s]} {s}" for s in STATUSES if s in counts]
    return f"{len(final)} trial{'s' * (len(final) != 1)}: {', '.join(parts)}"


def _missing_text(missing: pd.DataFrame) -> list[str]:
    return [f"{r.dataset}: {r.method} at {r.setting}: {r.note}" if r.dataset is not None
            else f"{r.method} at {r.setting}: {r.note}" for r in missing.itertuples()]


def chosen_by(final: pd.DataFrame) -> str:
    """One sentence on what chose what in a study: nothing (a grid runs every setting), or the search /
    early stopping / population schedule and the metric it chose by (``study.yaml``)."""
    spec = final.attrs.get("study") or {}
    metric = spec.get("metric") or "test_acc"
    on = "validation" if str(metric).startswith("val_") else "the test set" if str(metric).startswith("test_") else \
        "training labels"
    if spec.get("scheduler"):
        return (f"Chosen by `{metric}` (on {on}): population based training copied the weights and options of the "
                f"trials best by it into the others. The cells report test accuracy, which chose nothing.")
    search = spec.get("search")
    if search:
        stop = " and ASHA stopped trials" if search.get("scheduler") else ""
        return (f"Chosen by `{metric}` (on {on}): {search.get('algorithm', 'optuna')} proposed the trials{stop} by it. "
                f"The cells report test accuracy, which chose nothing.")
    return ("Chosen by: nothing; a grid runs every setting. The table ranks methods by final test accuracy "
            "(the paper's tables).")


def best_val_document(part: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Markdown of the second table of a study with a validation set: test accuracy at each trial's epoch of
    highest ``val_acc`` (the protocol of the reference codes), with where the validation labels come from."""
    sources = sorted({str(v) for v in part.get("val_source", pd.Series(dtype=object)).dropna()
                      if part["test_at_best_val"].notna().any()})
    held = " (the gold set itself, which training sees: not held out)" if sources == ["gold_reused"] else \
        " (held out of training)" if "gold_reused" not in sources else ""
    return ["", "## Test accuracy at the best validation epoch", "",
            f"Cells: mean ± std over seeds of the test accuracy (%) at the epoch of each trial's highest `val_acc`: "
            f"validation chose the epoch, test accuracy chose nothing. Validation labels: "
            f"{', '.join(sources) or 'none'}{held}.", "", to_markdown(table)]


def table_document(part: pd.DataFrame, dataset: str | None, table: pd.DataFrame, missing: pd.DataFrame,
                   study: str | None = None) -> str:
    """The Markdown report of one dataset (``part``: its trials): the rank table, how to read it, what chose
    what, and its missing cells (``table`` and ``missing`` from :func:`rank_table` and :func:`missing_cells`)."""
    title = f"Final test accuracy on {dataset}" if dataset else "Final test accuracy"
    lines = [f"# {title}", ""]
    names = class_names(part)
    if names:
        shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
        lines += [f"Classes ({len(names)}): {shown}.", ""]
    if study:
        lines += [f"Study `{study}`, {status_line(part)}.", ""]
    origin = provenance_line(part)
    if origin:
        lines += [origin, ""]
    lines += ["Cells: mean ± std of the final test accuracy (%) over seeds, finished trials only; "
              "bold: best per column; Avg. Rank: mean rank over the settings (1 = best, ties share the "
              "average rank); Time: mean training time of a trial.", "", chosen_by(part), "", to_markdown(table)]
    if missing.empty:
        lines += ["All cells complete."]
    else:
        lines += ["Missing or incomplete cells (`–` = no finished trial):", ""]
        lines += [f"- {r.method} at {r.setting}: {r.note}" for r in missing.itertuples()]
    return "\n".join(lines) + "\n"


def provenance_line(part: pd.DataFrame) -> str | None:
    """Where the trials of one table ran: ``Ran on: <device and versions>.`` when they all agree, else
    ``**The trials ran on different devices or versions**: ...`` naming each differing value and its trial count
    (None for trials that recorded no provenance)."""
    columns = [PROVENANCE_PREFIX + key for key in COMPARED if PROVENANCE_PREFIX + key in part]
    recorded = part[columns].dropna(how="all") if columns else part.iloc[0:0]
    if recorded.empty:
        return None
    values = {c: recorded[c].astype(str).value_counts(sort=False) for c in columns}
    differing = {c: v for c, v in values.items() if len(v) > 1}
    if not differing:
        return "Ran on: " + describe({c[len(PROVENANCE_PREFIX):]: recorded[c].iloc[0] for c in columns}) + "."
    parts = [f"{c[len(PROVENANCE_PREFIX):]} " + ", ".join(f"{value} ({n} trial{'s' * (n != 1)})" for value, n in v.items())
             for c, v in differing.items()]
    return "**The trials ran on different devices or versions**: " + "; ".join(parts) + "."


def _output_dir(out: Path) -> Path:
    """``out``, created if need be; EbomlcError when nothing can be written there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError("permission denied")
    except OSError as exc:
        reason = "not a directory" if out.exists() and not out.is_dir() else (exc.strerror or str(exc))
        raise EbomlcError(f"cannot write to {out}: {reason}") from exc
    return out


def population_lines(df: pd.DataFrame, final: pd.DataFrame, fixed: pd.DataFrame | None = None,
                     fixed_name: str | None = None) -> list[str]:
    """Markdown on a population-based (PBT) study: its best trial and its schedule, the population's
    mean, and with ``fixed`` (the final results of a study of fixed settings on the same budget) each
    fixed setting's mean over its trials, best first."""
    params = scheduled_params(df)
    metric, column, high = selection(final)
    done = final[final["finished"] & final["final_test_acc"].notna() & final[column].notna()]
    if not params or done.empty:
        return []
    best = done.loc[done[column].idxmax() if high else done[column].idxmin()]
    rows = df[(df["trial_dir"] == best["trial_dir"]) & df["epoch"].notna()].sort_values("epoch")
    acc = done["final_test_acc"] * 100
    lines = ["", "## Population based training", "",
             f"Population of {len(final)} trials; the options {', '.join(param_name(p) for p in params)} changed "
             f"during training. Final test accuracy: trial best by final `{metric}` "
             f"**{best['final_test_acc'] * 100:.2f}%** ({metric} {best[column]:.4f}), population "
             f"{acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0.0:.2f}% (mean ± std over {len(acc)} "
             f"finished trials).", "", f"The schedule of the trial best by `{metric}` (value in force at each epoch):",
             ""]
    for p in params:
        values = [f"{float(v):.3g}" for v in rows[f"current_{p}"]]
        lines.append(f"- {param_name(p)}: " + " → ".join(f"{v} (ep {int(e)})" for v, e, prev in
                                                         zip(values, rows["epoch"], [None, *values]) if v != prev))
    if fixed is not None:
        fixed_column = column if column in fixed and fixed[column].notna().any() else "final_test_acc"
        fixed_metric = metric if fixed_column == column else "test_acc"
        done_fixed = fixed[fixed["finished"] & fixed["final_test_acc"].notna() & fixed[fixed_column].notna()]
        groups = done_fixed.groupby("method_label", sort=False)
        stats = groups["final_test_acc"].agg(["mean", "std", "count"]).join(groups[fixed_column].mean().rename("chosen"))
        stats = stats.sort_values("chosen", ascending=not high if fixed_column == column else False)
        epochs = int(pd.to_numeric(done_fixed["epochs"]).max()) if "epochs" in done_fixed and len(done_fixed) else 0
        lines += ["", f"Fixed settings of the same budget (study `{fixed_name}`: {len(fixed)} trials of {epochs} "
                      f"epochs), mean over their trials, best by mean final `{fixed_metric}` first:", "",
                  f"| Setting | Final {fixed_metric} | Final test acc. (%) | Trials |", "| :-- | --: | --: | --: |"]
        lines += [f"| {label} | {r['chosen']:.4f} | {r['mean'] * 100:.2f} ± "
                  f"{0.0 if pd.isna(r['std']) else r['std'] * 100:.2f} | {int(r['count'])} |"
                  for label, r in stats.iterrows()]
        if len(stats):
            gap = best["final_test_acc"] - stats["mean"].iloc[0]
            pooled = done_fixed["final_test_acc"].mean()
            same = fixed_metric == metric
            lines += ["", f"PBT's best trial minus the best fixed setting's mean, on final test accuracy: "
                          f"{gap * 100:+.2f} points (PBT's trial chosen by `{metric}`, the fixed setting by "
                          f"`{fixed_metric}`{'' if same else ': the fixed study has no validation set'}; test "
                          f"accuracy chose {'nothing' if metric.startswith('val_') and same else 'something'}). "
                          f"Without choosing: population mean minus the mean of every fixed trial "
                          f"{(done['final_test_acc'].mean() - pooled) * 100:+.2f} points."]
    return lines


def analyze(path: str | Path, out: str | Path | None = None,
            echo: Callable[[str], None] | None = None, compare: str | Path | None = None) -> list[Path]:
    """Write the rank tables, plots, ``missing.txt`` and ``results.parquet`` of the study at ``path``
    into ``out`` (default ``<path>/analysis``); return the written files. ``echo`` receives progress
    lines (status of the trials, missing cells). Partial studies are fine: missing cells are listed.
    A population-based study's rank table gains a section on its schedules, compared with the fixed
    settings of the study at ``compare`` when given. Every file is written atomically; a failed write
    (full disk) is one :class:`StorageError` line naming the file."""
    try:
        return _analyze(path, out, echo, compare)
    except StorageError as exc:
        raise StorageError(f"cannot write {exc.path}: {exc.reason}; free space there (or choose another --out) and "
                           f"run `ebomlc analyze` again (the study itself is untouched)", exc.path, exc.reason) from None


def _analyze(path: str | Path, out: str | Path | None, echo: Callable[[str], None] | None,
             compare: str | Path | None) -> list[Path]:
    """The body of :func:`analyze`."""
    say = echo or (lambda _line: None)
    path = Path(path)
    out = Path(out) if out is not None else path / "analysis"
    df = load_study(path)
    final = final_results(df)
    study = df.attrs.get("study", {}).get("name") or path.name
    say(f"study {study}: {status_line(final)}")
    _output_dir(out)
    written = [save_parquet(df, out / "results.parquet")]
    save_text(final.drop(columns=["lc_matrix", "class_names"], errors="ignore").to_csv(index=False),
              out / "final_results.csv")
    written.append(out / "final_results.csv")

    fixed, compare_name = None, None
    if compare is not None:
        fixed = final_results(load_study(compare))
        compare_name = fixed.attrs.get("study", {}).get("name") or Path(compare).name
    several = len(datasets(final)) > 1
    lines: list[str] = []  # of missing.txt
    for name, part in by_dataset(final):
        tag = f"_{_slug(name)}" if several else ""
        table, missing = rank_table(part, name), missing_cells(part, name)
        lines += _missing_text(missing)
        origin = provenance_line(part)
        if origin and origin.startswith("**"):
            say(("" if name is None else f"{name}: ") + origin.replace("**", ""))
        doc = out / f"rank_table{tag}.md"
        extra = population_lines(df[df["trial_dir"].isin(part["trial_dir"])], part, fixed, compare_name)
        if not extra and part["test_at_best_val"].notna().any():  # a grid or search with a validation set
            at_best = rank_table(part, name, metric="test_at_best_val")
            extra = best_val_document(part, at_best)
            written.append(out / f"rank_table_best_val{tag}.tex")
            save_text(to_latex(at_best), written[-1])
        save_text(table_document(part, name, table, missing, study) + "".join(f"{line}\n" for line in extra), doc)
        tex = out / f"rank_table{tag}.tex"
        save_text(to_latex(table), tex)
        written += [doc, tex]
        for param in dict.fromkeys(p for ps in swept_params(part).values() for p in ps):
            written.append(out / f"ablation_{_slug(param_name(param))}{tag}.png")
            plot_ablation(part, param, written[-1], name, also=(".pdf",))
            written.append(written[-1].with_suffix(".pdf"))
        for setting in settings(part):
            written.append(out / f"curves{tag}_{_slug(setting)}.png")
            plot_curves(df, setting, written[-1], name, final=part)
        with_matrix = part[part["lc_matrix"].notna()]
        for key, setting in dict.fromkeys(zip(with_matrix["method_key"], with_matrix["setting"])):
            written.append(out / f"label_correction{tag}_{key}_{_slug(setting)}.png")
            plot_label_correction(part, key, setting, written[-1], name)
    for param in scheduled_params(df):
        written.append(out / f"schedule_{_slug(param)}.png")
        plot_schedule(df, param, written[-1], final)
    written.append(out / "time.png")
    plot_time(final, written[-1])

    save_text("\n".join(lines) + "\n" if lines else "no missing cells\n", out / "missing.txt")
    written.append(out / "missing.txt")
    if lines:
        say(f"{len(lines)} missing or incomplete cell{'s' * (len(lines) != 1)}:")
        for line in lines[:MAX_ECHOED_MISSING]:
            say(f"  {line}")
        if len(lines) > MAX_ECHOED_MISSING:
            say(f"  ... {len(lines) - MAX_ECHOED_MISSING} more in {out / 'missing.txt'}")
    return written

