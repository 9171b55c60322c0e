"""``ebomlc study run | resume | status``: the command line of Ray Tune studies."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only when a table is printed: `ebomlc train` starts without it
    import pandas as pd

EXAMPLES = """examples:
  ebomlc study run tune/studies/quickstart.yaml                 # local Ray, results in runs/studies/quickstart
  ebomlc study run tune/studies/table1_cifar10.yaml --address auto --storage s3://bucket/studies
  ebomlc study status runs/studies/quickstart
  ebomlc study resume runs/studies/quickstart --retry-errored
"""


def add_study_command(sub) -> None:
    """Register ``study`` and its subcommands on the ``ebomlc`` subparsers ``sub``."""
    study = sub.add_parser("study", help="run, resume and inspect Ray Tune studies",
                           description="Ray Tune studies described by one YAML spec (see tune/studies/).",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = study.add_subparsers(dest="study_command", required=True, parser_class=type(study))

    run = cmds.add_parser("run", help="run a study from its YAML spec",
                          description="Validate SPEC, then run every trial on a local Ray instance or a "
                          "cluster; trials checkpoint every epoch so the study can be resumed. Exit status: 0 all "
                          "trials finished, 1 some errored, 130 interrupted, 2 bad input (nothing written).")
    run.add_argument("spec", help="study spec (YAML), e.g. tune/studies/quickstart.yaml")
    run.add_argument("--storage", help="directory or URI (s3://..., gs://...) holding studies; use shared or "
                     "cloud storage on a cluster (default: runs/studies)")
    run.add_argument("--address", help="Ray cluster to join: auto (the cluster of this node), HOST:PORT or "
                     "ray://HOST:10001 (default: start a private local Ray)")
    run.add_argument("--name", help="study name, the directory under --storage (default: the spec's name)")
    run.add_argument("--quiet", action="store_true", help="no progress table")
    run.set_defaults(func=_cmd_run)

    resume = cmds.add_parser("resume", help="continue an interrupted study",
                             description="Continue a study whose driver was stopped, killed or lost its node: "
                             "finished trials are kept, interrupted ones continue from their last checkpoint.")
    resume.add_argument("path", help="the study directory <storage>/<name> (or its URI)")
    resume.add_argument("--retry-errored", action="store_true",
                        help="also retry errored trials, from their last checkpoint")
    resume.add_argument("--address", help="Ray cluster to join (default: start a private local Ray)")
    resume.set_defaults(func=_cmd_resume)

    status = cmds.add_parser("status", help="table of a study's trials: state, epoch, latest metric",
                             description="A header with the trials the study plans, those not created yet and an "
                             "ETA, then one row per trial: its state (RUNNING, PENDING, TERMINATED, ERROR; "
                             "INTERRUPTED when no driver runs it: `study resume` continues it), the last reported "
                             "epoch, the study's metric, the swept options, failures and the error of errored trials.")
    status.add_argument("path", help="the study directory <storage>/<name> (or its URI)")
    status.set_defaults(func=_cmd_status)


def _cmd_run(a: argparse.Namespace) -> int:
    from .launch import run_study, study_location
    from .spec import load_spec

    try:
        path = run_study(a.spec, storage=a.storage, name=a.name, address=a.address, progress=not a.quiet)
    except KeyboardInterrupt:
        return _interrupted(study_location(a.storage, a.name or load_spec(a.spec).name))
    return _finish(path)


def _cmd_resume(a: argparse.Namespace) -> int:
    from .launch import resume_study

    try:
        path = resume_study(a.path, retry_errored=a.retry_errored, address=a.address)
    except KeyboardInterrupt:
        return _interrupted(a.path)
    return _finish(path)


def _interrupted(path) -> int:
    print(f"ebomlc: study interrupted; continue it with: ebomlc study resume {path}", file=sys.stderr)
    return 130


def _cmd_status(a: argparse.Namespace) -> int:
    from .launch import study_status

    table = study_status(a.path)
    print(header_line(table))
    if len(table):
        print(format_table(table))
    print(summary_line(table))
    interrupted = int((table["state"] == "INTERRUPTED").sum())
    if interrupted or (table.attrs.get("not_created") and table.attrs.get("driver") is None):
        print(f"no driver is running this study: {interrupted} trial(s) interrupted, "
              f"{table.attrs.get('not_created', 0)} not created yet; continue them with: "
              f"ebomlc study resume {table.attrs['path']}")
    return 0


def header_line(table: pd.DataFrame) -> str:
    """``study NAME: 12 trials planned, 5 created, 7 not created yet; driver running (pid 4242 on
    node1); ETA 3m 20s``."""
    attrs = table.attrs
    planned = attrs.get("planned")
    counts = (f"{planned} trials planned, " if planned is not None else "") + f"{len(table)} created"
    if planned is not None:
        counts += f", {attrs.get('not_created', 0)} not created yet"
    driver = attrs.get("driver")
    if driver:
        return (f"study {attrs['study']}: {counts}; driver running (pid {driver.get('pid')} on {driver.get('host')}); "
                f"ETA {format_eta(attrs.get('eta_s'))}")
    if attrs.get("eta_s") == 0:
        return f"study {attrs['study']}: {counts}; finished"
    return f"study {attrs['study']}: {counts}; no driver running; ETA {format_eta(attrs.get('eta_s'))}"


def format_eta(seconds: float | None) -> str:
    """``unknown``, ``0s``, ``45s``, ``3m 20s``, ``2h 05m``."""
    if seconds is None or seconds != seconds:
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def format_table(table: pd.DataFrame) -> str:
    shown = table.assign(error=table["error"].str.slice(0, 80))
    metric = table.attrs["metric"]
    return shown.to_string(index=False, na_rep="-", formatters={metric: _number})


def _number(value) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def summary_line(table: pd.DataFrame) -> str:
    counts = table["state"].value_counts()
    parts = ", ".join(f"{n} {state.lower()}" for state, n in counts.items()) or "none created yet"
    return f"study {table.attrs['study']}: {len(table)} trials ({parts}) in {table.attrs['path']}"


def _finish(path) -> int:
    """After run/resume: a summary; exit 1 if trials errored, 130 if the study was interrupted."""
    from .launch import study_status

    table = study_status(path)
    print(summary_line(table))
    errored = table[table["state"] == "ERROR"]
    for row in errored.itertuples():
        print(f"  errored: {row.trial}: {row.error}", file=sys.stderr)
    if (~table["state"].isin(["TERMINATED", "ERROR"])).any() or table.attrs.get("not_created"):
        return _interrupted(path)
    if len(errored):
        print(f"ebomlc: {len(errored)} trial(s) errored; retry them with: "
              f"ebomlc study resume {path} --retry-errored", file=sys.stderr)
        return 1
    return 0
