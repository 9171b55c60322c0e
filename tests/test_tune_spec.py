"""Study specs: shipped specs validate, bad specs fail at once with one line naming the key,
``cluster.yaml`` passes Ray's autoscaler schema. No Ray instance is started here."""
from pathlib import Path

import pytest
import yaml

from ebomlc.cli import main
from ebomlc.errors import ConfigError
from tune.spec import load_spec

from .studies import ROOT

STUDIES = sorted((ROOT / "tune" / "studies").glob("*.yaml"))
GOOD = {"name": "s", "dataset": "digits", "methods": ["ce", "ebomlc"],
        "options": {"gold_fraction": 0.05, "epochs": 2}, "grid": {"seed": [1, 2]}}


def test_all_paper_specs_are_shipped():
    names = {p.stem for p in STUDIES}
    assert names >= {"quickstart", "table1_cifar10", "table2_cifar100", "ablation_rho", "ablation_delta",
                     "ablation_xi", "ablation_k"}


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_specs_validate(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    if spec.search is None:
        configs = spec.trial_configs()
        assert len({tuple(sorted((k, str(v)) for k, v in c.items())) for c in configs}) == len(configs)
    assert load_spec(yaml.safe_load(spec.to_yaml())) == spec  # study.yaml round-trips


def test_paper_tables_and_ablations_have_the_papers_grid():
    t1 = load_spec(ROOT / "tune/studies/table1_cifar10.yaml")
    configs = t1.trial_configs()
    settings = {(c["corruption_type"], c["corruption_level"]) for c in configs}
    assert settings == {("unif", x) for x in (0.0, 0.2, 0.4, 0.6, 0.8)} | {("flip", 0.2), ("flip", 0.4)}
    assert {c["seed"] for c in configs} == {1, 2, 3} and {c["method"] for c in configs} >= {"mlc", "mlcbome", "ebomlc"}
    assert all(c["epochs"] == 120 and c["gold_fraction"] == 0.02 and c["dataset"] == "cifar10" for c in configs)
    assert {c["dataset"] for c in load_spec(ROOT / "tune/studies/table2_cifar100.yaml").trial_configs()} == {"cifar100"}
    for name, key in (("rho", "rho"), ("delta", "delta"), ("xi", "xi"), ("k", "inner_steps")):
        configs = load_spec(ROOT / f"tune/studies/ablation_{name}.yaml").trial_configs()
        assert {c["method"] for c in configs} == {"ebomlc"} and len({c[key] for c in configs}) >= 3
        assert {c["corruption_level"] for c in configs} == {0.2, 0.4, 0.8} and {c["seed"] for c in configs} == {1, 2, 3}


def test_trial_configs_are_complete_resolved_train_options():
    configs = load_spec({**GOOD, "cases": [{"corruption_type": "flip", "corruption_level": 0.2}]}).trial_configs()
    assert len(configs) == 4
    ebomlc = [c for c in configs if c["method"] == "ebomlc"][0]
    assert ebomlc["rho"] == 0.2 and ebomlc["inner_steps"] == 1 and ebomlc["data_seed"] == ebomlc["seed"]
    assert ebomlc["corruption_type"] == "flip" and ebomlc["dataset"] == "digits"
    assert load_spec({**GOOD, "options": {"meta_lr": "1e-4"}}).trial_configs()[0]["meta_lr"] == 1e-4


def test_relative_data_dir_becomes_absolute_for_trials(tmp_path):
    spec = load_spec({**GOOD, "dataset": "cifar10", "options": {"data_dir": "cifar"}})
    assert spec.trial_configs(tmp_path)[0]["data_dir"] == str(tmp_path / "cifar")
    spec = load_spec({**GOOD, "dataset": "cifar100", "options": {}})
    assert spec.trial_configs(tmp_path)[0]["data_dir"] == str(tmp_path / "data" / "cifar100")


BAD = [
    ({"gird": {"seed": [1]}}, "gird: unknown key (did you mean 'grid'?)"),
    ({"grid": {"rhoo": [0.1]}}, "grid.rhoo: unknown training option (did you mean 'rho'?)"),
    ({"grid": {"rho": [0.2, 1.5]}}, "--rho must lie in [0, 1], got 1.5"),
    ({"grid": {"seed": []}}, "grid.seed: must be a non-empty list"),
    ({"grid": {"seed": ["one"]}}, "grid.seed: must be an integer, got 'one'"),
    ({"grid": {"method": ["ce"]}}, "grid.method: list methods under the top-level 'methods' key"),
    ({"options": {"epochs": 2, "seed": 3}}, "grid.seed: also set in options"),
    ({"options": {"corruption_level": 2.0}}, "--corruption_level must lie in [0, 1]"),
    ({"methods": ["ce", "sgd"]}, "methods: unknown method 'sgd'"),
    ({"methods": []}, "methods: list the methods to run"),
    ({"dataset": "data/mnist"}, "takes a name, not a path"),
    ({"dataset": "folder"}, "--dataset folder needs --data_dir DIR"),
    ({"name": "a/b"}, "name: a study name of letters"),
    ({"metric": "lc_acc"}, "metric: 'lc_acc' is not reported by every trial"),
    ({"mode": "maximise"}, "mode: must be max or min"),
    ({"resources": {"gpus": 1}}, "resources.gpus: unknown key (did you mean 'gpu'?)"),
    ({"resources": {"cpu": 0}}, "resources.cpu: must be above 0"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu: a fraction must be below 1"),
    ({"max_concurrent": 0}, "max_concurrent: must be at least 1"),
    ({"checkpoint": {"every": 0}}, "checkpoint.every: must be at least 1"),
    ({"cases": [{"corruption_level": 0.2, "noise": "unif"}]}, "cases[0].noise: unknown training option"),
    ({"search": {"num_samples": 2, "space": {"rho": {"uniform": [0, 1]}}}}, "search: cannot be combined with grid"),
    ({"cases": [{"method": "mlc"}]}, "cases[0].method: 'mlc' is not one of the study's methods (ce, ebomlc)"),
    ({"cases": [{"departures": "lookahead"}]}, "unknown part 'lookahead'"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m.split(":")[0][:30] for _, m in BAD])
def test_bad_specs_are_rejected_naming_the_key(change, message):
    with pytest.raises(ConfigError) as exc:
        load_spec({**GOOD, **change})
    text = str(exc.value)
    assert message in text and "\n" not in text, text


SEARCH = {"name": "s", "dataset": "digits", "methods": ["ebomlc"],
          "options": {"gold_fraction": 0.05, "epochs": 4, "val_fraction": 0.1},
          "search": {"num_samples": 2, "space": {"rho": {"uniform": [0.0, 1.0]}}}}
BAD_SEARCH = [
    ({"space": {"rho": {"uniform": [0.0, 2.0]}}}, "search.space.rho: --rho must lie in [0, 1], got 2.0"),
    ({"space": {"rho": {"uniform": [0.5, 0.1]}}}, "search.space.rho.uniform: low must be below high"),
    ({"space": {"meta_lr": {"loguniform": [0, 1]}}}, "search.space.meta_lr.loguniform: bounds must be positive"),
    ({"space": {"rho": {"normal": [0, 1]}}}, "search.space.rho: unknown distribution 'normal'"),
    ({"space": {"seed": {"int": [1, 3]}}}, "search.space.seed: seed cannot be searched"),
    ({"space": {"rho": [0.1, 0.2]}}, "search.space.rho: give one distribution"),
    ({"space": {}}, "search.space: name at least one option"),
    ({"num_samples": 0}, "search.num_samples: must be at least 1"),
    ({"algorithm": "bohb"}, "search.algorithm: unknown 'bohb'"),
    ({"scheduler": {"type": "asha", "grace_period": 9}}, "search.scheduler.grace_period: must be between 1 and 4"),
    ({"scheduler": "hyperband"}, "search.scheduler.type: only 'asha' is supported"),
    ({"sampler": "tpe"}, "search.sampler: unknown key"),
]


@pytest.mark.parametrize("change,message", BAD_SEARCH, ids=[m.split(":")[0] for _, m in BAD_SEARCH])
def test_bad_searches_are_rejected_naming_the_key(change, message):
    with pytest.raises(ConfigError) as exc:
        load_spec({**SEARCH, "search": {**SEARCH["search"], **change}})
    assert message in str(exc.value), str(exc.value)


def test_search_spec_tunes_one_method():
    spec = load_spec({**SEARCH, "search": {**SEARCH["search"], "scheduler": "asha"}})
    assert spec.search.scheduler["type"] == "asha" and "rho" not in spec.base_config()
    with pytest.raises(ConfigError, match="methods: a search tunes one method"):
        load_spec({**SEARCH, "methods": ["mlc", "ebomlc"]})


def test_cli_rejects_a_bad_spec_in_one_line_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**GOOD, "grid": {"rhoo": [0.1]}}))
    storage = tmp_path / "studies"
    assert main(["study", "run", str(spec), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ebomlc: error: bad.yaml: grid.rhoo: unknown training option"), err
    assert not storage.exists()
    spec.write_text("name: [unclosed\n")
    assert main(["study", "run", str(spec), "--storage", str(storage)]) == 2
    assert "not valid YAML" in capsys.readouterr().err and not storage.exists()
    assert main(["study", "run", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read study spec" in capsys.readouterr().err


def test_cli_status_and_resume_need_a_study(tmp_path, capsys):
    for command in ("status", "resume"):  # one message for both
        assert main(["study", command, str(tmp_path)]) == 2
        assert f"no study in {tmp_path} (no tuner.pkl)" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["run", "SPEC", "--storage", "foo://bar"], ["status", "foo://bar/x"],
                                     ["resume", "foo://x"], ["run", "SPEC", "--storage", "/dev/null"]],
                         ids=["run", "status", "resume", "run-dev-null"])
def test_cli_inaccessible_storage_fails_in_one_line(tmp_path, capsys, command):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(GOOD))
    assert main(["study", *[str(spec) if a == "SPEC" else a for a in command]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ebomlc: error: cannot access "), err


def test_saved_spec_reads_back_from_another_directory(tmp_path, monkeypatch):
    from tune import storage
    from tune.status import read_study_spec

    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    Path("labels.npy").write_bytes(b"")
    spec = load_spec({"name": "own", "dataset": "digits", "methods": ["ce"], "options": {"noisy_labels": "labels.npy"}})
    assert spec.trial_configs()[0]["noisy_labels"] == str(tmp_path / "run" / "labels.npy")  # trials: absolute
    location = str(tmp_path / "studies" / "own")
    storage.write_text(storage.join(location, storage.SPEC_FILE), spec.to_yaml())  # as run_study saves it
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert read_study_spec(location) == spec
    with pytest.raises(ConfigError, match="--noisy_labels file 'labels.npy' does not exist"):
        load_spec(yaml.safe_load(spec.to_yaml()))  # a run checks every trial's files


def test_submit_joins_the_cluster_unless_given_an_address():
    from tune.submit import study_args

    assert study_args(["run", "s.yaml"]) == ["run", "s.yaml", "--address=auto"]
    assert study_args(["resume", "p", "--address", "h:1"]) == ["resume", "p", "--address", "h:1"]
    assert study_args(["run", "s.yaml", "--address=h:1"]) == ["run", "s.yaml", "--address=h:1"]
    assert study_args(["status", "p"]) == ["status", "p"] and study_args([]) == ["--help"]


def test_storage_reads_and_writes_local_paths_and_uris(tmp_path):
    from tune import storage

    uri = f"file://{tmp_path}/a"
    assert storage.is_uri(uri) and storage.resolve(uri + "/") == uri and storage.as_path(uri) == uri
    storage.write_text(storage.join(uri, "study.yaml"), "name: x\n")
    assert storage.exists(storage.join(uri, "study.yaml")) and not storage.exists(storage.join(uri, "nope"))
    assert storage.read_text(str(tmp_path / "a" / "study.yaml")) == "name: x\n"
    assert storage.as_path(storage.resolve(tmp_path / "a")) == tmp_path / "a"


def test_cluster_yaml_passes_rays_autoscaler_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = prepare_config(config)
    validate_config(prepared)
    workers = [t for name, t in prepared["available_node_types"].items() if name != prepared["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers)  # GPU workers
    assert any(t.get("max_workers", 0) > t.get("min_workers", 0) for t in workers)  # autoscaling
    assert any("pip install" in c and "ebomlc" in c for c in prepared["setup_commands"])  # installs this package


def test_cases_naming_a_method_run_only_with_it_and_trials_get_one_thread_per_cpu():
    spec = load_spec({**GOOD, "cases": [{"method": "ce"}, {"method": "ebomlc", "variant": "paper"},
                                        {"method": "ebomlc", "variant": "reference", "departures": ["-step_f_term"]}]})
    trials = [(c["method"], c["variant"], c["departures"], c["seed"]) for c in spec.trial_configs()]
    assert trials == [("ce", "paper", "", 1), ("ce", "paper", "", 2), ("ebomlc", "paper", "", 1),
                      ("ebomlc", "paper", "", 2), ("ebomlc", "reference", "-step_f_term", 1),
                      ("ebomlc", "reference", "-step_f_term", 2)]
    assert spec.swept_keys() == ["method", "variant", "departures", "seed"]
    assert {c["threads"] for c in spec.trial_configs()} == {1}
    assert load_spec({**GOOD, "resources": {"cpu": 4}}).trial_configs()[0]["threads"] == 4
    assert load_spec({**GOOD, "options": {**GOOD["options"], "threads": 2}}).trial_configs()[0]["threads"] == 2


def test_variant_studies_cover_every_part_on_the_restored_reading_and_off_the_reference():
    from ebomlc.departures import AUTHORS_PARTS

    for name in ("variants_digits", "variants_cifar10_small", "variants_cifar10"):
        spec = load_spec(ROOT / "tune" / "studies" / f"{name}.yaml", check_trials=False)
        cases = [(c.get("variant"), c.get("departures", "")) for c in spec.cases if c.get("method") == "ebomlc"]
        assert {("paper", ""), ("restore_w", ""), ("reference", "")} <= set(cases)
        # each authors' part alone on the restored-w reading; restore_w alone off it is the revised paper
        assert {d for v, d in cases if v == "restore_w"} >= set(AUTHORS_PARTS)
        toggled = {d.lstrip("-") for v, d in cases if v == "reference" and d}
        assert toggled == set(AUTHORS_PARTS) | {"restore_w"}, name  # on CIFAR-10 q_as_step is added instead
        assert {c.get("method") for c in spec.cases} == {"ce", "mlc", "mlcbome", "ebomlc"}
        assert spec.grid["corruption_level"] == [0.4, 0.8] and len(spec.grid["seed"]) >= 2
