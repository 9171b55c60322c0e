"""A study spec that is not valid YAML stops ``ebomlc study run`` with one line that says where:
``FILE:LINE:COLUMN: not valid YAML: <problem>``. No Ray instance is started here."""
import pytest

from ebomlc.cli import main

GOOD_LINES = ["name: s", "dataset: digits", "methods: [ce]", "options: {gold_fraction: 0.05, epochs: 2}"]
CASES = [
    # (lines, line, column, problem)
    (GOOD_LINES[:3] + ["options:", "  epochs: 2", "   bs: 32"], 6, 6, "mapping values are not allowed here"),
    (["name: s: t"] + GOOD_LINES[1:], 1, 8, "mapping values are not allowed here"),
    (GOOD_LINES + ["grid:", "  seed: [1, 2", "metric: test_acc"], 7, 7,
     "expected ',' or ']', but got ':' (while parsing a flow sequence at line 6)"),
    (GOOD_LINES + ["grid:", "\tseed: [1, 2]"], 6, 1, "found character '\\t' that cannot start any token"),
    (GOOD_LINES + ['description: "never closed'], 6, 1,
     "found unexpected end of stream (while scanning a quoted scalar at line 5)"),
    (GOOD_LINES + ["grid: {seed: *seeds}"], 5, 14, "found undefined alias 'seeds'"),
]


@pytest.mark.parametrize("lines,line,column,problem", CASES,
                         ids=["indent", "two-colons", "unclosed-list", "tab", "unclosed-quote", "alias"])
def test_invalid_yaml_says_file_line_and_column(tmp_path, capsys, lines, line, column, problem):
    spec = tmp_path / "bad.yaml"
    spec.write_text("\n".join(lines) + "\n")
    storage = tmp_path / "studies"
    assert main(["study", "run", str(spec), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ebomlc: error: {spec}:{line}:{column}: not valid YAML: {problem}"]
    assert not storage.exists()


def test_the_path_is_shown_as_given(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: s\nmethods: [ce]\noptions:\n  epochs: 2\n   bs: 3\n")
    assert main(["study", "run", "bad.yaml"]) == 2
    assert capsys.readouterr().err.strip() == \
        "ebomlc: error: bad.yaml:5:6: not valid YAML: mapping values are not allowed here"


def test_a_spec_that_is_not_text_is_one_line(tmp_path, capsys):
    spec = tmp_path / "binary.yaml"
    spec.write_bytes(b"name: s\n\xff\xfe\x00\x01\n")
    assert main(["study", "run", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ebomlc: error: "), err
