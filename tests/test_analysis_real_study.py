"""The analysis of a real two-trial study run by ``tune.launch.run_study`` (digits, CE and EBOMLC,
2 epochs of 3 steps): everything written, both trials finished, numbers read back consistently."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from tune import launch

SPEC = {  # the tune/spec.py format: shared options, one trial per method
    "name": "analysis-real",
    "dataset": "digits",
    "methods": ["ce", "ebomlc"],
    "options": {"epochs": 2, "gold_fraction": 0.05, "max_steps_per_epoch": 3, "corruption_type": "unif",
                "corruption_level": 0.4, "seed": 1},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    # run_study uses the Ray of this process if there is one, else starts and stops a private one
    return Path(launch.run_study(SPEC, storage=str(tmp_path_factory.mktemp("storage")), name=SPEC["name"],
                                 progress=False))


def test_analyze_real_study(study, tmp_path):
    df = analysis.load_study(study)
    final = analysis.final_results(df)
    assert sorted(final["method"]) == ["ce", "ebomlc"]
    assert final["finished"].all() and set(final["status"]) == {"finished"}
    assert set(final["setting"]) == {"uniform-40%"} and (final["last_epoch"] == 2).all()
    assert final["final_test_acc"].between(0, 1).all() and (final["train_time"] > 0).all()
    assert sorted(df.groupby("method")["epoch"].apply(list).sum()) == [1, 1, 2, 2]
    ebomlc = final[final["method"] == "ebomlc"].iloc[0]
    matrix = np.asarray(ebomlc["lc_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() > 0  # digits: 10 classes, counts over the silver set
    assert analysis.missing_cells(final).empty

    written = analysis.analyze(study, tmp_path / "out")
    names = {p.name for p in written}
    assert {"results.parquet", "rank_table.md", "rank_table.tex", "curves_uniform-40.png",
            "label_correction_ebomlc_uniform-40.png", "time.png", "missing.txt"} <= names
    assert all(p.stat().st_size > 0 for p in written)
    table = analysis.rank_table(final)
    assert list(table.index) == ["CE", "EBOMLC"] and (table["n"]["uniform-40%"] == 1).all()
    md = (tmp_path / "out" / "rank_table.md").read_text()
    assert "| CE |" in md and "| EBOMLC |" in md and "All cells complete." in md
    back = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(back) == len(df)
    assert np.asarray(json.loads(back["lc_matrix"].dropna().iloc[0])).shape == (10, 10)
