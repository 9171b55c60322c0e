"""Experiment tracking: the spec's ``tracking`` key (MLflow, W&B) is checked in one line, becomes
Ray's logger callbacks, and a study logs every trial to MLflow; TensorBoard event files are
written by Tune's default logger in every trial directory."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from ebomlc.cli import main
from ebomlc.errors import ConfigError
from tune.launch import resolve_tracking, run_study, tracking_callbacks
from tune.spec import load_spec, tracking_uri

from .studies import trial_dirs

FAST = {"gold_fraction": 0.05, "device": "cpu", "max_steps_per_epoch": 2}
GOOD = {"name": "t", "dataset": "digits", "methods": ["ce"], "options": {**FAST, "epochs": 2}}
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


BAD = [
    ({"tensorbord": {}}, "tracking.tensorbord: unknown key; known: mlflow, wandb"),
    ({"mlflow": {"uri": "mlruns"}}, "tracking.mlflow.uri: unknown key"),
    ({"mlflow": {"tracking_uri": 3}}, "tracking.mlflow.tracking_uri: must be text, got 3"),
    ({"mlflow": {"tags": ["a"]}}, "tracking.mlflow.tags: must be a mapping"),
    ({"mlflow": {"save_artifact": "yes"}}, "tracking.mlflow.save_artifact: must be true or false"),
    ({"mlflow": "mlruns"}, "tracking.mlflow: must be a mapping"),
    ({"wandb": {"entity": "me"}}, "tracking.wandb.project: the W&B project to log to is required"),
    ({"wandb": {"project": "p", "mode": "sometimes"}}, "tracking.wandb.mode: must be one of online, offline"),
    ({"wandb": {"project": "p", "tags": "a"}}, "tracking.wandb.tags: must be a list of text"),
    ({"wandb": {"project": "p", "api_key": "k"}}, "tracking.wandb.api_key: unknown key"),
]


@pytest.mark.parametrize("tracking,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_tracking_is_one_line_naming_the_key(tracking, message):
    with pytest.raises(ConfigError) as exc:
        load_spec({**GOOD, "tracking": tracking})
    assert message in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_tracking_round_trips_through_study_yaml():
    spec = load_spec({**GOOD, "tracking": {"mlflow": {"tracking_uri": "mlruns", "tags": {"team": "lnl"}},
                                           "wandb": {"project": "ebomlc", "mode": "offline"}}})
    assert load_spec(yaml.safe_load(spec.to_yaml())) == spec
    assert load_spec({**GOOD, "tracking": {"mlflow": None}}).tracking == {"mlflow": {}}
    assert "tracking" not in load_spec(GOOD).to_dict()


def test_relative_tracking_uri_becomes_absolute_below_the_start_directory(tmp_path):
    assert tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert tracking_uri("runs/../mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    for unchanged in ("sqlite:////abs/mlflow.db", "file:///abs/mlruns", "http://localhost:5000", "databricks",
                      "databricks://profile", None):
        assert tracking_uri(unchanged, tmp_path) == unchanged
    spec = resolve_tracking(load_spec({**GOOD, "tracking": {"mlflow": {"tracking_uri": "mlruns"}}}), tmp_path)
    assert spec.tracking["mlflow"]["tracking_uri"] == (tmp_path / "mlruns").as_uri()


def test_a_missing_tracker_package_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    import tune.launch

    real = importlib.util.find_spec
    monkeypatch.setattr(tune.launch.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "wandb") else real(name, *a))
    for tracker, install in (("mlflow", 'pip install "ebomlc[tracking]"'), ("wandb", "pip install wandb")):
        spec = tmp_path / f"{tracker}.yaml"
        spec.write_text(yaml.safe_dump({**GOOD, "tracking": {tracker: {"project": "p"} if tracker == "wandb" else {}}}))
        assert main(["study", "run", str(spec), "--storage", str(tmp_path / "studies")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"tracking.{tracker}: " in err[0] and install in err[0], err
    assert not (tmp_path / "studies").exists()  # nothing written


@pytest.mark.skipif(HAS_WANDB, reason="W&B is installed here")
def test_wandb_without_its_package_says_what_to_install():
    spec = load_spec({**GOOD, "tracking": {"wandb": {"project": "p"}}})  # the spec itself is valid
    with pytest.raises(ConfigError, match=r"^tracking\.wandb: W&B is not installed.*; pip install wandb$"):
        tracking_callbacks(spec)


@pytest.mark.skipif(not HAS_MLFLOW, reason="needs mlflow (pip install -e '.[test]')")
def test_a_study_logs_every_trial_to_mlflow_and_tensorboard(ray_session, tmp_path):
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()  # MLflow's local file store
    spec = {**GOOD, "name": "tracked", "tracking": {"mlflow": {"tracking_uri": store, "experiment_name": "lnl",
                                                               "tags": {"team": "noisy"}}}}
    path = run_study(spec, storage=str(tmp_path / "studies"), progress=False)
    (trial,) = trial_dirs(path)
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("lnl")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["team"] == "noisy"
    assert run.data.params["method"] == "ce" and run.data.params["epochs"] == "2"
    assert run.data.metrics["test_acc"] == pytest.approx(rows[-1]["test_acc"])
    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([r["test_acc"] for r in rows])
    assert yaml.safe_load((path / "study.yaml").read_text())["tracking"]["mlflow"]["tracking_uri"] == store

    events = list(Path(trial).glob("events.out.tfevents.*"))  # Tune's TensorBoard logger
    assert events and events[0].stat().st_size > 0
