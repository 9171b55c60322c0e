"""Analysis on synthetic study directories with known numbers: loading, final results, rank
tables (means, stds, ranks with ties, bold), Markdown and LaTeX, missing cells, ``analyze`` and its CLI."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.results import missing_cells, swept_params
from ebomlc.cli import build_parser, main
from ebomlc.errors import EbomlcError

from .test_analysis_support import (EPOCHS, FINAL, LABELS, LC_MATRIX, epoch_lines, params, write_study,
                                    write_sweep_study, write_trial)

METHODS = ("CE", "MLC", "EBOMLC")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module")
def df(study):
    return analysis.load_study(study)


@pytest.fixture(scope="module")
def final(df):
    return analysis.final_results(df)


@pytest.fixture(scope="module")
def table(final):
    return analysis.rank_table(final)


@pytest.fixture(scope="module")
def partial_study(tmp_path_factory):
    """The grid less both EBOMLC seeds at flip-20% (one running, one pending) and MLC's seed 2 at
    uniform-40% (errored after one epoch), plus a CE trial at flip-40% without result.json."""
    s = write_study(tmp_path_factory.mktemp("partial"),
                    skip={("ebomlc", "flip-20%", 1), ("ebomlc", "flip-20%", 2), ("mlc", "uniform-40%", 2)})
    write_trial(s, "train_errored", params("mlc", "unif", 0.4, 2), epoch_lines("mlc", 0.5, reported=1), error=True)
    write_trial(s, "train_running", params("ebomlc", "flip", 0.2, 1), epoch_lines("ebomlc", 0.6, reported=2),
                raw_tail='{"epoch": 3, "test_a')  # a line being written
    write_trial(s, "train_pending", params("ebomlc", "flip", 0.2, 2), [])
    write_trial(s, "train_no_results", params("ce", "flip", 0.4, 1), None)
    return s


@pytest.fixture(scope="module")
def partial_df(partial_study):
    return analysis.load_study(partial_study)


@pytest.fixture(scope="module")
def partial_final(partial_df):
    return analysis.final_results(partial_df)


# ---------------------------------------------------------------------------- loading
def test_setting_label():
    assert analysis.setting_label("unif", 0.4) == "uniform-40%"
    assert analysis.setting_label("flip", 0.2) == "flip-20%"
    assert analysis.setting_label("unif", 0.0) == "uniform-0%"
    assert analysis.setting_label("unif", 0.6) == "uniform-60%"  # no 60.00000000000001
    assert analysis.setting_label("unif", 0.125) == "uniform-12.5%"


def test_load_study_is_tidy(df):
    assert len(df) == 18 * EPOCHS  # 3 methods x 3 settings x 2 seeds, one row per epoch
    for column in ("trial_id", "status", "finished", "setting", "method", "seed", "rho", "epoch", "test_acc",
                   "upper_loss", "lower_loss", "train_loss", "epoch_time", "train_time", "lc_matrix"):
        assert column in df.columns, column
    assert "config" not in df.columns  # Ray's nested config is dropped: params.json is the config
    assert set(df["status"]) == {"finished"} and df["finished"].all()
    assert df["trial_id"].nunique() == 18
    assert df.attrs["study"] == {"name": "synth", "dataset": "digits"}
    # None knobs take the method's preset (EBOMLC: rho 0.2, K 1); CE has none
    ebomlc = df[df["method"] == "ebomlc"]
    assert (ebomlc["rho"] == 0.2).all() and (ebomlc["inner_steps"] == 1).all()
    assert df.loc[df["method"] == "ce", "rho"].isna().all()
    # lc_matrix only on the last epoch of meta methods
    with_matrix = df[df["lc_matrix"].notna()]
    assert set(with_matrix["method"]) == {"mlc", "ebomlc"} and (with_matrix["epoch"] == EPOCHS).all()
    assert with_matrix["lc_matrix"].iloc[0] == LC_MATRIX


def test_load_partial_study_never_crashes(partial_df):
    df = partial_df
    status = df.groupby("trial_dir")["status"].first()
    assert status["train_errored"] == "errored"
    assert status["train_running"] == "unfinished"
    assert status["train_pending"] == "pending"
    assert status["train_no_results"] == "pending"
    running = df[df["trial_dir"] == "train_running"]
    assert list(running["epoch"]) == [1, 2] and running["unreadable_lines"].iloc[0] == 1
    pending = df[df["trial_dir"] == "train_pending"]
    assert len(pending) == 1 and pending["epoch"].isna().all() and pending["test_acc"].isna().all()


def test_reported_twice_keeps_last_line(tmp_path):
    """A trial restored by Ray re-reports epochs: one row per epoch, the later report wins."""
    lines = epoch_lines("ce", 0.9)
    redo = dict(lines[1], test_acc=0.5)
    write_trial(tmp_path, "t", params("ce", "unif", 0.4, 1), lines[:2] + [redo, lines[2]])
    df = analysis.load_study(tmp_path)
    assert list(df["epoch"]) == [1, 2, 3]
    assert df.loc[df["epoch"] == 2, "test_acc"].item() == 0.5


def test_load_errors_are_one_clear_line(tmp_path):
    with pytest.raises(EbomlcError, match="does not exist"):
        analysis.load_study(tmp_path / "nope")
    with pytest.raises(EbomlcError, match="no trials in"):
        analysis.load_study(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "params.json").write_text("{not json")
    with pytest.raises(EbomlcError, match="cannot read"):
        analysis.load_study(tmp_path)


def test_save_parquet_round_trip(df, tmp_path):
    path = analysis.save_parquet(df, tmp_path / "results.parquet")
    back = pd.read_parquet(path)
    assert back.shape == df.shape and list(back.columns) == list(df.columns)
    assert json.loads(back["lc_matrix"].dropna().iloc[0]) == LC_MATRIX
    np.testing.assert_allclose(back["test_acc"], df["test_acc"])


# ---------------------------------------------------------------------------- final results
def test_final_results(final):
    assert len(final) == 18
    assert list(dict.fromkeys(final["method_label"])) == list(METHODS)  # the paper's order
    row = final[(final["method"] == "mlc") & (final["setting"] == "uniform-40%") & (final["seed"] == 2)].iloc[0]
    assert row["final_test_acc"] == pytest.approx(0.77)
    assert row["best_test_acc"] == pytest.approx(0.77)
    assert row["last_epoch"] == EPOCHS and row["finished"]
    assert row["train_time"] == pytest.approx(6.0) and row["seconds_per_epoch"] == pytest.approx(2.0)
    assert row["lc_matrix"] == LC_MATRIX
    assert final.loc[final["method"] == "ce", "lc_matrix"].isna().all()


def test_swept_params_and_method_labels(tmp_path):
    final = analysis.final_results(analysis.load_study(write_sweep_study(tmp_path)))
    # rho None is the preset 0.2: three values; K two values; seed and noise never count
    assert swept_params(final) == {"ebomlc": ["rho", "inner_steps"]}
    assert list(dict.fromkeys(final["method_label"])) == [
        "EBOMLC (rho=0.2, K=1)", "EBOMLC (rho=0.2, K=3)", "EBOMLC (rho=0.5, K=1)", "EBOMLC (rho=0.5, K=3)",
        "EBOMLC (rho=1, K=1)", "EBOMLC (rho=1, K=3)"]
    assert "ebomlc_rho0.5_K3" in set(final["method_key"])


# ---------------------------------------------------------------------------- rank table
def test_rank_table_means_stds_counts(table):
    assert list(table.index) == list(METHODS)
    assert list(table["mean"].columns) == list(LABELS)
    for (method, setting), values in FINAL.items():
        name = {"ce": "CE", "mlc": "MLC", "ebomlc": "EBOMLC"}[method]
        assert table["mean"].loc[name, setting] == pytest.approx(np.mean(values))
        assert table["std"].loc[name, setting] == pytest.approx(np.std(values, ddof=1))
        assert table["n"].loc[name, setting] == 2


def test_rank_table_ranks_ties_and_bold(table):
    # uniform-0%: MLC (0.91, 0.93) and EBOMLC (0.92, 0.92) tie at 0.92 (up to float noise): 1.5 each
    assert table["rank"]["uniform-0%"].tolist() == [3.0, 1.5, 1.5]
    assert table["rank"]["uniform-40%"].tolist() == [3.0, 2.0, 1.0]
    assert table["rank"]["flip-20%"].tolist() == [3.0, 2.0, 1.0]
    assert table["best"]["uniform-0%"].tolist() == [False, True, True]  # all tied best are bold
    assert table["best"]["uniform-40%"].tolist() == [False, False, True]
    assert table["avg_rank"].tolist() == pytest.approx([3.0, 5.5 / 3, 3.5 / 3])
    assert table["time"].tolist() == pytest.approx([3.0, 6.0, 4.5])
    assert table.attrs["dataset"] == "digits"


def test_rank_table_with_missing_cells(partial_final):
    table = analysis.rank_table(partial_final)
    assert list(table["mean"].columns) == [*LABELS, "flip-40%"]
    assert math.isnan(table["mean"].loc["EBOMLC", "flip-20%"])  # running and pending only
    assert table["n"].loc["MLC", "uniform-40%"] == 1  # the errored seed is left out
    assert table["mean"].loc["MLC", "uniform-40%"] == pytest.approx(0.75)
    assert math.isnan(table["std"].loc["MLC", "uniform-40%"])
    assert table["mean"]["flip-40%"].isna().all() and table["rank"]["flip-40%"].isna().all()
    assert not table["best"]["flip-40%"].any()
    # ranks among the methods present: flip-20% has CE (0.80) and MLC (0.82)
    assert table["rank"]["flip-20%"].tolist()[:2] == [2.0, 1.0]
    assert table["avg_rank"]["EBOMLC"] == pytest.approx(1.25)  # over its two columns


def test_missing_cells(partial_final, final):
    assert missing_cells(final).empty
    missing = missing_cells(partial_final)
    notes = {(r.method, r.setting): r.note for r in missing.itertuples()}
    assert notes == {
        ("CE", "flip-40%"): "0 of 2 seeds finished (1 pending)",
        ("MLC", "uniform-40%"): "1 of 2 seeds finished (1 errored)",
        ("MLC", "flip-40%"): "no trials",
        ("EBOMLC", "flip-20%"): "0 of 2 seeds finished (1 unfinished, 1 pending)",
        ("EBOMLC", "flip-40%"): "no trials",
    }


def test_rank_table_one_dataset_at_a_time(final):
    two = pd.concat([final, final.assign(dataset="cifar10")], ignore_index=True)
    with pytest.raises(EbomlcError, match="several datasets"):
        analysis.rank_table(two)
    assert analysis.rank_table(two, dataset="cifar10")["mean"].shape == (3, 3)
    with pytest.raises(EbomlcError, match="no trials on dataset"):
        analysis.rank_table(final, dataset="cifar100")


# ---------------------------------------------------------------------------- renderers
def test_markdown(table):
    md = analysis.to_markdown(table)
    lines = md.strip().splitlines()
    assert lines[0] == "| Method | uniform-0% | uniform-40% | flip-20% | Avg. Rank | Time |"
    assert all(line.count("|") == 7 for line in lines)
    assert lines[2] == "| CE | 91.00 ± 1.41 | 72.00 ± 2.83 | 80.00 ± 0.00 | 3.00 | 3.0 s |"
    assert lines[3] == "| MLC | **92.00 ± 1.41** | 76.00 ± 1.41 | 82.00 ± 1.41 | 1.83 | 6.0 s |"
    assert lines[4] == "| EBOMLC | **92.00 ± 0.00** | **79.00 ± 1.41** | **83.00 ± 0.00** | **1.17** | 4.5 s |"


def _tex_columns(row: str) -> int:
    """Columns spanned by one LaTeX table row (``\\multicolumn{n}`` counts n)."""
    cells = row.rstrip().removesuffix(r"\\").split(" & ")
    return sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


def _check_tabular(tex: str, n_columns: int) -> list[str]:
    tex = tex.strip()
    assert tex.startswith(r"\begin{tabular}{") and tex.endswith(r"\end{tabular}")
    depth = 0
    for ch in tex.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    spec = re.match(r"\\begin\{tabular\}\{([lcr|]+)\}", tex).group(1)
    assert len(spec.replace("|", "")) == n_columns
    lines = tex.splitlines()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert lines.count(rule) == 1
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule") == len(lines) - 2
    rows = [line for line in lines if line.rstrip().endswith(r"\\")]
    for row in rows:
        assert _tex_columns(row) == n_columns, row
    assert re.search(r"(?<!\\)[%&_#]", tex.replace(" & ", " ")) is None  # specials escaped
    return rows


def test_latex_structure(table):
    tex = analysis.to_latex(table)
    rows = _check_tabular(tex, 1 + 3 + 2)
    assert rows[0].startswith(r" & \multicolumn{2}{c}{Uniform} & \multicolumn{1}{c}{Flip}")
    assert r"\cmidrule(lr){2-3}\cmidrule(lr){4-4}" in tex
    assert rows[1] == r"Method & 0\% & 40\% & 20\% & Avg. Rank & Time \\"
    assert rows[2] == r"CE & 91.00 $\pm$ 1.41 & 72.00 $\pm$ 2.83 & 80.00 $\pm$ 0.00 & 3.00 & 3.0 s \\"
    assert rows[4] == (r"EBOMLC & \textbf{92.00 $\pm$ 0.00} & \textbf{79.00 $\pm$ 1.41} & "
                       r"\textbf{83.00 $\pm$ 0.00} & \textbf{1.17} & 4.5 s \\")
    assert tex.count(r"\textbf{") == 4 + 1  # bold cells (one tie) + best average rank


def test_latex_missing_cells_and_escaping(partial_final):
    table = analysis.rank_table(partial_final)
    tex = analysis.to_latex(table)
    rows = _check_tabular(tex, 1 + 4 + 2)
    assert rows[-1].startswith(r"EBOMLC & \textbf{92.00 $\pm$ 0.00} & \textbf{79.00 $\pm$ 1.41} & -- & -- & ")
    md = analysis.to_markdown(table)
    assert "| MLC | **92.00 ± 1.41** | 75.00 | **82.00 ± 1.41** | – |" in md


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(table, tmp_path):
    doc = ("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
           + analysis.to_latex(table) + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:]


# ---------------------------------------------------------------------------- analyze and its CLI
def test_analyze_partial_study(partial_study, tmp_path):
    out = tmp_path / "report"
    lines: list[str] = []
    written = analysis.analyze(partial_study, out, echo=lines.append)
    names = {p.name for p in written}
    assert {"results.parquet", "final_results.csv", "rank_table.md", "rank_table.tex", "time.png",
            "missing.txt", "curves_uniform-0.png", "curves_flip-20.png", "curves_flip-40.png",
            "label_correction_ebomlc_uniform-40.png", "label_correction_mlc_flip-20.png"} <= names
    assert not any(n.startswith("ablation_") for n in names)  # nothing swept
    assert not any(n.startswith("label_correction_ebomlc_flip") for n in names)  # no matrix reported there
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    missing = (out / "missing.txt").read_text()
    assert "digits: MLC at uniform-40%: 1 of 2 seeds finished (1 errored)" in missing
    assert "digits: EBOMLC at flip-40%: no trials" in missing
    md = (out / "rank_table.md").read_text()
    assert "- EBOMLC at flip-20%: 0 of 2 seeds finished (1 unfinished, 1 pending)" in md
    assert "19 trials: 15 finished, 1 unfinished, 1 errored, 2 pending" in md
    assert lines[0] == "study synth: 19 trials: 15 finished, 1 unfinished, 1 errored, 2 pending"
    assert "5 missing or incomplete cells:" in lines
    assert len(pd.read_parquet(out / "results.parquet")) == 15 * EPOCHS + 1 + 2 + 1 + 1


def test_analyze_study_with_nothing_finished(tmp_path):
    s = tmp_path / "s"
    write_trial(s, "trainable_0e188_00000_0_method=ce_2026-11-21_16-24-41", params("ce", "unif", 0.4, 1),
                epoch_lines("ce", 0.7, reported=1, trial_id="0e188_00000"))
    write_trial(s, "trainable_0e188_00001_1_method=mlc_2026-11-21_16-24-41", params("mlc", "flip", 0.2, 1), None,
                error=True)
    write_trial(s, "ebomlc_seed=1_b861f1b2", params("ebomlc", "flip", 0.2, 1), [])
    final = analysis.final_results(analysis.load_study(s))
    # from the result lines, or Ray's trial directory name
    assert list(final["trial_id"]) == ["0e188_00000", "0e188_00001", "b861f1b2"]
    written = analysis.analyze(s, tmp_path / "out")
    assert {p.name for p in written} == {"results.parquet", "final_results.csv", "rank_table.md", "rank_table.tex",
                                         "curves_uniform-40.png", "curves_flip-20.png", "time.png", "missing.txt"}
    _check_tabular((tmp_path / "out" / "rank_table.tex").read_text(), 1 + 2 + 2)
    assert "| CE | – | – | – | – |" in (tmp_path / "out" / "rank_table.md").read_text()
    assert len((tmp_path / "out" / "missing.txt").read_text().splitlines()) == 6


def test_analyze_one_table_per_dataset(tmp_path):
    s = tmp_path / "s"
    write_trial(s, "a", params("ce", "unif", 0.4, 1), epoch_lines("ce", 0.7))
    write_trial(s, "b", params("ce", "unif", 0.4, 1, dataset="cifar10"), epoch_lines("ce", 0.6))
    names = {p.name for p in analysis.analyze(s)}
    assert {"rank_table_digits.md", "rank_table_digits.tex", "rank_table_cifar10.md", "rank_table_cifar10.tex",
            "curves_digits_uniform-40.png", "curves_cifar10_uniform-40.png", "time.png"} <= names
    assert "| CE | **60.00** | **1.00** | 3.0 s |" in (s / "analysis" / "rank_table_cifar10.md").read_text()


def test_analyze_sweep_default_out(tmp_path):
    study = write_sweep_study(tmp_path, rhos=(None, 1.0), settings=[("unif", 0.4)])
    written = analysis.analyze(study)
    assert all(p.parent == study / "analysis" for p in written)
    names = {p.name for p in written}
    assert {"ablation_rho.png", "ablation_rho.pdf", "ablation_K.png", "ablation_K.pdf"} <= names
    assert (study / "analysis" / "missing.txt").read_text() == "no missing cells\n"
    assert len(analysis.load_study(study)) == 8 * EPOCHS  # the output directory is not mistaken for a trial


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """CE and EBOMLC, one seed at uniform-40%."""
    return write_study(tmp_path_factory.mktemp("tiny"), "tiny", methods=("ce", "ebomlc"),
                       skip={(m, s, seed) for m in ("ce", "ebomlc") for s in LABELS for seed in (1, 2)
                             if s != "uniform-40%" or seed == 2})


def test_cli_analyze(tiny_study, tmp_path, capsys):
    args = build_parser().parse_args(["analyze", str(tiny_study), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "study tiny: 2 trials: 2 finished" in out
    assert f"files to {tmp_path / 'o'}" in out and (tmp_path / "o" / "rank_table.md").is_file()
    bad = build_parser().parse_args(["analyze", str(tmp_path / "missing")])
    with pytest.raises(EbomlcError, match="does not exist"):
        bad.func(bad)


def test_cli_analyze_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["analyze"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_ebomlc_main_analyze(tiny_study, tmp_path, capsys):
    assert main(["analyze", str(tiny_study), "--out", str(tmp_path / "o")]) == 0
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("ebomlc: error: study directory")


def _one_error_line(argv: list[str], capsys) -> str:
    """The single stderr line of ``ebomlc`` run with ``argv``, which must fail with status 2."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ebomlc: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("key", ["method", "dataset"])
def test_cli_params_without_key(key, tmp_path, capsys):
    s = tmp_path / "s"
    write_trial(s, "a", params("ce", "unif", 0.4, 1), epoch_lines("ce", 0.7))
    p = params("mlc", "unif", 0.4, 1)
    del p[key]
    write_trial(s, "b", p, epoch_lines("mlc", 0.7))
    line = _one_error_line(["analyze", str(s)], capsys)
    assert line.endswith(f"{s / 'b' / 'params.json'} has no {key!r}")
    assert not (s / "analysis").exists()  # nothing half-written


def test_cli_out_not_writable(tiny_study, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file")
    line = _one_error_line(["analyze", str(tiny_study), "--out", str(out)], capsys)
    assert line == f"ebomlc: error: cannot write to {out}: not a directory"
    assert out.read_text() == "a file"
    line = _one_error_line(["analyze", str(tiny_study), "--out", str(out / "sub")], capsys)
    assert line.startswith(f"ebomlc: error: cannot write to {out / 'sub'}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_cli_study_path_is_a_file(tmp_path, capsys):
    (tmp_path / "study.yaml").write_text("name: x\n")
    line = _one_error_line(["analyze", str(tmp_path / "study.yaml")], capsys)
    assert line == f"ebomlc: error: study directory {tmp_path / 'study.yaml'} is not a directory"


def test_variant_and_departures_read_as_one_setting_in_labels():
    from analysis.results import _method_label, variant_text

    assert variant_text("paper", "") == "paper"
    assert variant_text("reference", "-step_f_term") == "reference -step_f_term"
    assert variant_text("paper", "restore_w,step_f_term") == "paper +restore_w +step_f_term"
    row = pd.Series({"method": "ebomlc", "variant": "reference", "departures": "-step_f_term", "rho": 0.5})
    label, key = _method_label(row, ["variant", "departures", "rho"])
    assert label == "EBOMLC (variant=reference -step_f_term, rho=0.5)"
    assert key == "ebomlc_variantreference--step_f_term_rho0.5"  # file-name safe
