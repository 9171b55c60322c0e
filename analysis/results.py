"""From the tidy per-epoch frame to one row per trial: final accuracy, time, label correction.

Each trial gets a *method label*: the method's display name plus the values of its swept
hyperparameters (e.g. ``EBOMLC (rho=0.5)``), the row of a rank table and the line of a plot,
and a *method key* for file names (``ebomlc_rho0.5``). A hyperparameter is *swept* when it takes
more than one value across the trials of one method.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Iterator

import numpy as np
import pandas as pd

from ebomlc.config import TrainConfig
from ebomlc.errors import EbomlcError
from ebomlc.provenance import PREFIX as PROVENANCE_PREFIX

from .load import STATUSES, TRIAL_COLUMNS, setting_order

#: Rank-table rows: the paper's Tables I and II order, the baselines it does not list first.
METHOD_ORDER = ("ce", "gold", "coteachingplus", "dividemix", "glc", "l2rw", "mwnet", "pmwnet", "mlc", "mlcbome", "ebomlc")
METHOD_NAMES = {"ce": "CE", "gold": "Gold only", "coteachingplus": "Co-teaching+", "dividemix": "DivideMix", "glc": "GLC",
                "l2rw": "L2RW", "mwnet": "MW-Net", "pmwnet": "PMW-Net", "mlc": "MLC", "mlcbome": "MLC-D", "ebomlc": "EBOMLC"}
#: Short names of hyperparameters in labels and file names (the paper's K).
PARAM_NAMES = {"inner_steps": "K"}
#: Config fields that never count as swept hyperparameters.
NOT_HYPERPARAMS = frozenset({"method", "dataset", "seed", "data_seed", "corruption_type", "corruption_level",
                             "runid", "device", "data_dir", "download", "out", "extra", "resume", "quiet", "threads"})
#: Preferred order of swept hyperparameters in labels.
PARAM_ORDER = ("rho", "delta", "xi", "inner_steps")


def method_name(method: str) -> str:
    """Display name of a method: ``mlcbome -> MLC-D``."""
    return METHOD_NAMES.get(method, str(method))


def param_name(param: str) -> str:
    """Display name of a hyperparameter: ``inner_steps -> K``."""
    return PARAM_NAMES.get(param, param)


def param_column(name: str) -> str:
    """Config column of a hyperparameter given by its column or display name (``K -> inner_steps``)."""
    return {v: k for k, v in PARAM_NAMES.items()}.get(name, name)


def format_value(value: Any) -> str:
    """Compact text of a hyperparameter value: ``0.25``, ``5``, ``0.0003``, ``fd``."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            return "none"
        if not math.isfinite(value) or float(value) != int(value):
            return f"{float(value):g}"
        return str(int(value))
    return "none" if value is None else str(value)


def value_key(value: Any) -> Any:
    """A hashable, comparable form of a config value (lists and dicts as JSON, NaN as None)."""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def config_columns(df: pd.DataFrame) -> list[str]:
    """The config columns of a study frame (``df.attrs`` when present, else the TrainConfig fields)."""
    columns = df.attrs.get("config_columns") or [f.name for f in dataclasses.fields(TrainConfig)]
    return [c for c in columns if c in df.columns]


def scheduled_params(df: pd.DataFrame) -> list[str]:
    """Options whose per-epoch values a study recorded (``current_<name>``): a population schedule (PBT)
    changed them during training, so a trial's final options do not label it."""
    return [c[len("current_"):] for c in df.columns if c.startswith("current_") and df[c].notna().any()]


def swept_params(df: pd.DataFrame) -> dict[str, list[str]]:
    """``{method: [hyperparameters taking more than one value across its trials]}`` (seed, noise and
    options a population schedule changes during training excluded)."""
    scheduled = set(scheduled_params(df)) | set(df.attrs.get("scheduled", ()))
    candidates = [c for c in config_columns(df) if c not in NOT_HYPERPARAMS and c not in scheduled]
    candidates.sort(key=lambda c: (PARAM_ORDER.index(c) if c in PARAM_ORDER else len(PARAM_ORDER)))
    swept: dict[str, list[str]] = {}
    for method, group in df.groupby("method", sort=False):
        swept[str(method)] = [c for c in candidates if len({value_key(v) for v in group[c]}) > 1]
    return swept


def variant_text(variant: Any, departures: Any) -> str:
    """``reference``, ``paper +step_f_term``, ``reference -step_f_term``: a variant and its departures."""
    parts = [p if p.startswith("-") else f"+{p}" for p in str(departures or "").split(",") if p]
    return " ".join([str(variant), *parts])


def _method_label(row: pd.Series, params: list[str]) -> tuple[str, str]:
    """Method label and method key of a trial. A swept variant or departures read as one setting,
    ``variant=reference -step_f_term``."""
    values = [(param_name(p), format_value(row[p])) for p in params if p not in ("variant", "departures")]
    if "variant" in params or "departures" in params:
        values.insert(0, ("variant", variant_text(row.get("variant"), row.get("departures"))))
    label = method_name(row["method"]) + (f" ({', '.join(f'{n}={v}' for n, v in values)})" if values else "")
    key = "_".join([str(row["method"])] + [f"{n}{v}" for n, v in values])
    return label, re.sub(r"[^A-Za-z0-9._=+-]+", "-", key)


def _last(series: pd.Series) -> Any:
    values = series.dropna()
    return values.iloc[-1] if len(values) else np.nan


def _at_best_val(reported: pd.DataFrame) -> tuple[float, float]:
    """``(epoch, test_acc)`` of the first reported epoch of highest ``val_acc`` (NaN without one)."""
    if "val_acc" not in reported or not reported["val_acc"].notna().any():
        return np.nan, np.nan
    row = reported.loc[reported["val_acc"].idxmax()]
    return float(row["epoch"]), float(row["test_acc"])


def final_results(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: config, ``status``, ``finished``, ``last_epoch``, ``final_test_acc``
    (test accuracy at the last reported epoch), ``best_test_acc``, ``final_val_acc`` and ``final_val_loss``,
    ``best_val_epoch`` and ``test_at_best_val`` (the test accuracy at the first epoch of highest
    ``val_acc``; NaN without a validation set), ``train_time`` (seconds),
    ``seconds_per_epoch``, ``lc_acc``, ``lc_matrix`` and ``class_names`` (last reported), ``method_label`` and
    ``method_key``.
    """
    if df.empty:
        raise EbomlcError("the study frame is empty")
    configs = config_columns(df)
    records = []
    for _, trial in df.groupby("trial_dir", sort=False):
        reported = trial[trial["epoch"].notna()]
        last = trial.iloc[-1]
        record = {c: last[c] for c in TRIAL_COLUMNS + configs if c in trial.columns}
        record["last_epoch"] = int(reported["epoch"].max()) if len(reported) else 0
        for column, name in (("test_acc", "final_test_acc"), ("lc_acc", "lc_acc")):
            record[name] = _last(reported[column]) if column in reported else np.nan
        record["best_test_acc"] = reported["test_acc"].max() if "test_acc" in reported else np.nan
        for column in ("val_acc", "val_loss"):
            record[f"final_{column}"] = _last(reported[column]) if column in reported else np.nan
        record["best_val_epoch"], record["test_at_best_val"] = _at_best_val(reported.sort_values("epoch"))
        if "train_time" in reported and reported["train_time"].notna().any():
            record["train_time"] = _last(reported["train_time"])
        else:
            record["train_time"] = reported["epoch_time"].sum() if "epoch_time" in reported else np.nan
        record["seconds_per_epoch"] = reported["epoch_time"].mean() if "epoch_time" in reported else np.nan
        for column in ("lc_matrix", "class_names"):
            values = reported[column].dropna() if column in reported else []
            record[column] = values.iloc[-1] if len(values) else None
        for column in (c for c in trial.columns if c.startswith(PROVENANCE_PREFIX)):
            # where the trial ran; "A / B" when it continued in a process elsewhere
            values = list(dict.fromkeys(str(v) for v in reported[column].dropna()))
            record[column] = " / ".join(values) if values else None
        records.append(record)
    final = pd.DataFrame.from_records(records)
    final["finished"] = final["finished"].astype(bool)
    final.attrs["scheduled"] = scheduled_params(df)
    swept = swept_params(final)
    labels = [_method_label(row, swept.get(str(row["method"]), [])) for _, row in final.iterrows()]
    final["method_label"] = [label for label, _ in labels]
    final["method_key"] = [key for _, key in labels]
    final.attrs = {**df.attrs, "swept": swept, "scheduled": scheduled_params(df)}
    return sort_final(final)


def _sortable(value: Any) -> tuple:
    value = value_key(value)
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


#: The ``final_results`` column holding each trial's final value of a study metric.
METRIC_COLUMNS = {"test_acc": "final_test_acc", "test_loss": None, "val_acc": "final_val_acc",
                  "val_loss": "final_val_loss", "lc_acc": "lc_acc"}


def selection(final: pd.DataFrame) -> tuple[str, str, bool]:
    """``(metric, column, higher_is_better)``: the study's metric (``study.yaml``; ``test_acc`` when unknown)
    and the ``final_results`` column of its final value, by which a trial or setting is picked as best.
    A metric without a final column (``test_loss``, ``lc_acc_clean``) falls back to ``final_test_acc``."""
    spec = final.attrs.get("study") or {}
    metric = str(spec.get("metric") or "test_acc")
    column = METRIC_COLUMNS.get(metric)
    if column is None or column not in final or not final[column].notna().any():
        return "test_acc", "final_test_acc", True
    return metric, column, str(spec.get("mode") or ("min" if metric.endswith("_loss") else "max")) == "max"


def sort_final(final: pd.DataFrame) -> pd.DataFrame:
    """Rows in the paper's order: dataset, method (CE, baselines, MLC, MLC-D, EBOMLC, others), swept values,
    setting (uniform 0..80%, flip), seed."""
    swept = final.attrs.get("swept") or swept_params(final)

    def key(row: pd.Series) -> tuple:
        method = str(row.get("method"))
        return (str(row.get("dataset")), METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER),
                method, tuple(_sortable(row[p]) for p in swept.get(method, [])), setting_order(row["setting"]),
                _sortable(row.get("seed")))

    order = sorted(range(len(final)), key=lambda i: key(final.iloc[i]))
    out = final.iloc[order].reset_index(drop=True)
    out.attrs = dict(final.attrs)
    return out


def class_names(final: pd.DataFrame) -> list[str] | None:
    """The class names the trials of ``final`` reported (None when none did)."""
    names = final["class_names"].dropna() if "class_names" in final else []
    return [str(n) for n in names.iloc[0]] if len(names) else None


def datasets(final: pd.DataFrame) -> list[str]:
    """The datasets of a study, in order of appearance."""
    return [str(d) for d in final["dataset"].dropna().unique()] if "dataset" in final else []


def by_dataset(final: pd.DataFrame) -> Iterator[tuple[str | None, pd.DataFrame]]:
    """``(dataset, its rows)`` per dataset in order of appearance; ``(None, final)`` for a study without one."""
    for name in datasets(final) or [None]:
        yield name, (final if name is None else final[final["dataset"] == name])


def one_dataset(final: pd.DataFrame, dataset: str | None) -> tuple[pd.DataFrame, str | None]:
    """The rows of ``dataset``; with ``None`` the study must have a single dataset."""
    names = datasets(final)
    if dataset is None:
        if len(names) > 1:
            raise EbomlcError(f"the study has several datasets ({', '.join(names)}); choose one with dataset=")
        return final, (names[0] if names else None)
    if dataset not in names:
        raise EbomlcError(f"no trials on dataset {dataset!r}; the study has: {', '.join(names) or 'none'}")
    return final[final["dataset"] == dataset], dataset


def method_labels(final: pd.DataFrame) -> list[str]:
    """Method labels in table order."""
    firsts = final.drop_duplicates("method_label")
    firsts.attrs = dict(final.attrs)
    return list(sort_final(firsts)["method_label"])


def settings(final: pd.DataFrame) -> list[str]:
    """Setting labels in table order (uniform 0..80%, then flip)."""
    return sorted(final["setting"].unique(), key=setting_order)


def missing_cells(final: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Cells (method label x setting) of the rank table with fewer finished seeds than the study has.

    Columns: ``dataset, method (label), setting, expected, finished, unfinished, errored, pending, note``.
    """
    columns = ["dataset", "method", "setting", "expected", *STATUSES, "note"]
    rows = []
    parts = by_dataset(final) if dataset is None else [(dataset, final[final["dataset"] == dataset])]
    for name, part in parts:
        expected = max(int(part["seed"].nunique()) if "seed" in part else 1, 1)
        counts = part.groupby(["method_label", "setting"])["status"].value_counts().unstack(fill_value=0)
        for label in method_labels(part):
            for setting in settings(part):
                n = {s: int(counts.loc[(label, setting), s]) if (label, setting) in counts.index
                     and s in counts.columns else 0 for s in STATUSES}
                if n["finished"] >= expected:
                    continue
                if not any(n.values()):
                    note = "no trials"
                else:
                    others = [f"{n[s]} {s}" for s in STATUSES[1:] if n[s]]
                    note = f"{n['finished']} of {expected} seed{'s' * (expected != 1)} finished"
                    note += f" ({', '.join(others)})" if others else ""
                rows.append({"dataset": name, "method": label, "setting": setting, "expected": expected, **n,
                             "note": note})
    return pd.DataFrame(rows, columns=columns)
