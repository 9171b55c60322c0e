"""Run, resume and inspect studies: ``run_study``, ``resume_study``, ``study_status``.

A study is a standard Ray Tune experiment directory ``<storage>/<name>/``: Tune's own state
(``tuner.pkl``, ``experiment_state-*.json``), the spec as ``study.yaml``, and one directory per
trial with ``params.json`` (its training options), ``result.json`` (one line per epoch) and
checkpoints. Without an address a private local Ray instance is started; ``address="auto"``
joins a running cluster (``ray up cluster.yaml``). While a driver runs it keeps a heartbeat file
in the study directory (``study_status`` tells running trials from interrupted ones by it), and
the spec's ``tracking`` trackers (MLflow, W&B) receive every trial's config and epochs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ebomlc.errors import ConfigError, EbomlcError

from . import storage as store
from .repair import restore_missing_checkpoints
from .spec import StudySpec, check_name, load_spec, tracking_uri
from .status import HEARTBEAT_S, has_study, heartbeat_text, read_study_spec, require_study, running_driver, study_status
from .storage import HEARTBEAT_FILE, SPEC_FILE

__all__ = ["run_study", "resume_study", "study_status", "study_location"]


def run_study(spec: str | Path | Mapping[str, Any], storage: str | None = None, name: str | None = None,
              address: str | None = None, progress: bool = True) -> Path | str:
    """Run a study to the end; return its experiment directory ``<storage>/<name>``.

    ``spec`` is a YAML path or a parsed dict; ``storage`` a directory or URI (default
    ``runs/studies``); ``name`` overrides the spec's. Everything is validated before Ray starts and
    nothing is written for a bad spec. Trials that error (e.g. diverge) do not stop the study.
    Returns a ``Path``, or the URI text for cloud storage.
    """
    study = load_spec(spec)
    if name is not None:
        study = dataclasses.replace(study, name=check_name(name, "--name"))
    study = resolve_tracking(study, Path.cwd())  # saved resolved: a resume elsewhere logs to the same store
    location = study_location(storage, study.name)
    store.check_writable(location)
    with driver_lock(location):
        return _run_locked(study, location, address, progress)


def _run_locked(study: StudySpec, location: str, address: str | None, progress: bool) -> Path | str:
    if has_study(location):
        raise EbomlcError(f"study {location} already exists; continue it with `ebomlc study resume {location}` "
                          f"or choose another --name")
    from .search import search_setup

    setup = search_setup(study, data_root=Path.cwd())
    callbacks = tracking_callbacks(study)
    if address is None:
        _check_data(setup.known_configs)
    with _ray(address), _tune_env(_tracking_env(study)):
        from ray import tune as ray_tune

        store.write_text(store.join(location, SPEC_FILE), study.to_yaml())
        tuner = ray_tune.Tuner(
            _trainable(study), param_space=setup.param_space,
            tune_config=ray_tune.TuneConfig(
                metric=study.metric, mode=study.mode, search_alg=setup.search_alg, scheduler=setup.scheduler,
                num_samples=setup.num_samples, max_concurrent_trials=study.max_concurrent,
                reuse_actors=study.schedule is None,  # PBT: a fresh actor per restore keeps result.json whole
                trial_dirname_creator=TrialDirName(tuple(study.swept_keys()))),
            run_config=ray_tune.RunConfig(
                name=study.name, storage_path=location.rsplit("/", 1)[0], verbose=1 if progress else 0,
                progress_reporter=_reporter(study) if progress else None, callbacks=callbacks or None,
                checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=study.checkpoint_keep),
                failure_config=ray_tune.FailureConfig(max_failures=study.max_failures)))
        with _heartbeat(location):
            tuner.fit()
    return store.as_path(location)


def resume_study(path: str | Path, retry_errored: bool = False, address: str | None = None) -> Path | str:
    """Continue an interrupted study: finished trials stay, interrupted ones continue from their
    last checkpoint, and with ``retry_errored`` errored ones too. Returns the experiment directory."""
    location = store.resolve(path)
    require_study(location)
    with driver_lock(location):
        return _resume_locked(location, retry_errored, address)


def _resume_locked(location: str, retry_errored: bool, address: str | None) -> Path | str:
    study = read_study_spec(location)
    if study is None:
        raise EbomlcError(f"{location} has no {SPEC_FILE}; it was not started by `ebomlc study run`")
    driver = running_driver(location)
    if driver is not None:
        raise EbomlcError(f"study {location} is running (driver pid {driver.get('pid')} on {driver.get('host')}, "
                          f"seen {driver['age_s']:.0f}s ago); watch it with `ebomlc study status {location}`")
    tracking_callbacks(study)  # the trackers' packages, checked before Ray starts (Tune restores the callbacks)
    if not store.is_uri(location):
        restore_missing_checkpoints(location)
    with _ray(address), _tune_env(_tracking_env(study)):
        from ray import tune as ray_tune

        tuner = ray_tune.Tuner.restore(location, trainable=_trainable(study), resume_unfinished=True,
                                       resume_errored=retry_errored, restart_errored=False)
        with _heartbeat(location):
            tuner.fit()
    return store.as_path(location)


@contextlib.contextmanager
def driver_lock(location: str) -> Iterator[None]:
    """One driver per local study directory: the lock of :mod:`ebomlc.train.lock` on it while the driver
    runs (a second ``study run``/``study resume``, at any moment, is refused naming the holder). Cloud
    storage has no such lock; there the heartbeat check of ``study resume`` remains."""
    if store.is_uri(location):
        yield
        return
    from ebomlc.train.lock import RunLock, RunLocked, describe_holder, read_holder

    try:
        lock = RunLock(location, "study directory").acquire()
    except RunLocked:
        raise RunLocked(f"study {location} is running (driver {describe_holder(read_holder(Path(location)))}); "
                        f"watch it with `ebomlc study status {location}`") from None
    try:
        yield
    finally:
        lock.release(remove_created=True)


def study_location(storage: str | None, name: str) -> str:
    """``<storage>/<name>``, absolute (or a URI); ``storage`` defaults to ``runs/studies``."""
    return store.join(store.resolve(storage or store.DEFAULT_STORAGE), name)


@dataclass(frozen=True)
class TrialDirName:
    """Trial directory names from the swept options: ``ebomlc_corruption_level=0.2_seed=1_<id>``."""

    keys: tuple[str, ...]

    def __call__(self, trial) -> str:
        parts = [_short(trial.config.get(k)) if k == "method" else f"{k}={_short(trial.config.get(k))}"
                 for k in self.keys]
        return "_".join([*parts, trial.trial_id])[-150:].replace("/", "-").replace(" ", "")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _heartbeat(location: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Keep ``<location>/.driver-heartbeat`` fresh (every ``every`` seconds, from a thread) while
    the driver runs the study, and remove it at the end; a killed driver leaves a stale one."""
    file = store.join(location, HEARTBEAT_FILE)
    store.write_text(file, heartbeat_text(every))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                store.write_text(file, heartbeat_text(every))
            except EbomlcError:  # storage briefly unreachable: the next beat tries again
                pass

    thread = threading.Thread(target=beat, name="ebomlc-study-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(EbomlcError):
            store.remove(file)


# ---------------------------------------------------------------------------------------- tracking
#: tracker -> (module to import, its name, what to install)
_TRACKER_PACKAGES = {"mlflow": ("mlflow", "MLflow", 'pip install "ebomlc[tracking]" (or mlflow-skinny)'),
                     "wandb": ("wandb", "W&B", "pip install wandb")}


def resolve_tracking(study: StudySpec, root: Path) -> StudySpec:
    """``study`` with a relative MLflow ``tracking_uri`` made absolute below ``root``."""
    mlflow = study.tracking.get("mlflow")
    if not mlflow or mlflow.get("tracking_uri") is None:
        return study
    resolved = {**mlflow, "tracking_uri": tracking_uri(mlflow["tracking_uri"], root)}
    return dataclasses.replace(study, tracking={**study.tracking, "mlflow": resolved})


def tracking_callbacks(study: StudySpec) -> list:
    """Ray's logger callbacks for the spec's ``tracking`` (``MLflowLoggerCallback``,
    ``WandbLoggerCallback``): one run per trial, with its config and every epoch's metrics. A
    tracker whose package is missing is one ``ConfigError`` line saying what to install."""
    callbacks = []
    for tracker, settings in study.tracking.items():
        module, label, install = _TRACKER_PACKAGES[tracker]
        try:
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"No module named {module!r}")
            importlib.import_module(module)
            integration = importlib.import_module(f"ray.air.integrations.{tracker}")
        except ImportError as exc:
            raise ConfigError(f"tracking.{tracker}: {label} is not installed or does not import "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {install}") from None
        if tracker == "mlflow":
            callbacks.append(integration.MLflowLoggerCallback(
                tracking_uri=settings.get("tracking_uri"), experiment_name=settings.get("experiment_name", study.name),
                tags={str(k): str(v) for k, v in (settings.get("tags") or {}).items()},
                save_artifact=bool(settings.get("save_artifact", False))))
        else:
            extra = {k: settings[k] for k in ("entity", "tags", "mode") if k in settings}
            callbacks.append(integration.WandbLoggerCallback(
                project=settings["project"], group=settings.get("group", study.name), **extra))
    return callbacks


def _tracking_env(study: StudySpec) -> dict[str, str]:
    """MLflow 3 refuses a directory (``file://``) store unless ``MLFLOW_ALLOW_FILE_STORE`` is set:
    a spec that names one opts in (unless the variable is set already)."""
    uri = (study.tracking.get("mlflow") or {}).get("tracking_uri") or ""
    if uri.startswith("file:") and "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
        return {"MLFLOW_ALLOW_FILE_STORE": "true"}
    return {}


def _trainable(study: StudySpec):
    from ray import tune as ray_tune

    from .trainable import train_trial

    trainable = ray_tune.with_parameters(train_trial, checkpoint_every=study.checkpoint_every,
                                         record=study.mutated_keys)
    return ray_tune.with_resources(trainable, {"cpu": study.cpu, "gpu": study.gpu})


def _reporter(study: StudySpec):
    from ray.tune import CLIReporter

    return CLIReporter(parameter_columns=study.swept_keys(), metric_columns=["epoch", study.metric],
                       max_report_frequency=15, sort_by_metric=False)


def _check_data(configs: list[dict[str, Any]]) -> None:
    """Local runs: load each dataset once in the driver, so a missing one fails before Ray starts
    (and a folder of JPEGs is decoded into the disk cache once, not by every trial)."""
    from ebomlc.data import load_dataset

    for name, data_dir, download, size in {(c["dataset"], c["data_dir"], c["download"], c.get("image_size"))
                                           for c in configs}:
        load_dataset(name, data_dir, download, image_size=size)  # not memoised: the driver keeps no dataset


@contextlib.contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """Use the running Ray of this process, else connect to ``address``, else start a private one."""
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level="WARNING")
        else:
            ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise EbomlcError(f"cannot connect to Ray at {address!r}: {str(exc).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


#: Tune's classic table reporter (one compact table: trials, swept options, epoch, metric), and no
#: warning about frequent experiment snapshots (short epochs checkpoint often, which is intended).
TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@contextlib.contextmanager
def _tune_env(extra: Mapping[str, str] | None = None) -> Iterator[None]:
    env = {**TUNE_ENV, **(extra or {})}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
