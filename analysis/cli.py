"""``ebomlc analyze PATH [--out DIR]``: register with :func:`add_analyze_command` on ``ebomlc``'s subparsers."""
from __future__ import annotations

import argparse


def add_analyze_command(subparsers) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to ``subparsers`` (from ``parser.add_subparsers``); return its parser."""
    p = subparsers.add_parser(
        "analyze", help="rank tables and plots from a study directory",
        description="Turn a study directory (finished or still running) into rank tables (Markdown, LaTeX), "
                    "ablation, learning-curve, label-correction and time plots, without re-running anything. "
                    "Missing or unfinished cells are listed, never fatal.")
    p.add_argument("path", help="study directory <storage>/<name> (study.yaml and one sub-directory per trial)")
    p.add_argument("--out", help="output directory (default: PATH/analysis)")
    p.add_argument("--compare", metavar="STUDY",
                   help="a study of fixed settings on the same budget, compared in the rank table of a population "
                        "based (PBT/PB2) study at PATH")
    p.set_defaults(func=_cmd_analyze)
    return p


def _cmd_analyze(a: argparse.Namespace) -> int:
    from .report import analyze  # late: pandas and matplotlib only when analysing

    written = analyze(a.path, a.out, echo=print, compare=a.compare)
    print(f"wrote {len(written)} files to {written[0].parent}: " + ", ".join(p.name for p in written[:6])
          + (", ..." if len(written) > 6 else ""))
    return 0
