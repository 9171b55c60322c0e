"""The CPU CIFAR-10 benchmark's combined table: one row per method of the paper, CE identical across studies."""
import pytest

from .studies import benchmark_module


def test_every_method_of_table_one_has_its_default_row_and_ce_runs_once():
    table = benchmark_module("cifar10_cpu_table")
    final = table.load()
    rows = final[final.method_label.isin(table.DEFAULTS)]
    assert set(rows.method) == {"ce", "gold", "coteachingplus", "dividemix", "glc", "l2rw", "mwnet", "pmwnet", "mlc",
                                "mlcbome", "ebomlc"}
    assert rows.groupby("method_label").size().eq(4).all()  # 2 noise levels x 2 seeds, each once
    assert (final.method == "ce").sum() == 4


def test_studies_that_saw_different_data_are_refused(tmp_path, monkeypatch):
    table = benchmark_module("cifar10_cpu_table")
    for name in table.STUDIES:
        frame = table.pd.read_csv(table.RESULTS / f"{name}_final.csv")
        if name == "table1_cifar10_cpu":
            frame.loc[frame.method == "ce", "final_test_acc"] += 0.01
        frame.to_csv(tmp_path / f"{name}_final.csv", index=False)
    monkeypatch.setattr(table, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="did not see identical data"):
        table.load()
