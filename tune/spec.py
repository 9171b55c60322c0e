"""Study specs: one YAML file describing a whole Ray Tune study, validated before Ray starts.

A spec names the training options every trial shares, the methods, and either a ``grid``
(every combination, crossed with optional ``cases``) or a ``search`` (Optuna TPE or random
sampling over ranges, optionally with ASHA early stopping). ``load_spec`` checks every key and
every trial's options, raising ``ConfigError`` with one line naming the bad key. See
``tune/studies/quickstart.yaml`` for an annotated example.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ebomlc.config import TrainConfig
from ebomlc.errors import ConfigError
from ebomlc.methods import METHODS

#: TrainConfig fields a study may set (``method`` comes from ``methods``; ``runid`` is per run).
OPTIONS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)
                           if f.name not in ("method", "runid")}
#: Options a search may not sample: they name the problem, not a hyperparameter.
NOT_SEARCHABLE = ("dataset", "data_dir", "download", "device", "seed", "data_seed", "corruption_type",
                  "noisy_labels", "gold_indices", "noise_file", "noise_key", "noise_index", "image_size",
                  "val_fraction", "val_source")
#: Metrics every method reports, those of trials with a validation set (``val_fraction`` or
#: ``val_source: gold_reused``), and those only label-correcting methods (mlc, mlcbome, ebomlc) report.
COMMON_METRICS = ("test_acc", "test_loss")
VAL_METRICS = ("val_acc", "val_loss")
LABEL_CORRECTION_METRICS = ("lc_acc", "lc_acc_clean", "lc_acc_corrupted")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
SEARCH_ALGORITHMS = ("optuna", "random")
TOP_KEYS = ("name", "description", "dataset", "data_dir", "methods", "options", "cases", "grid", "search",
            "metric", "mode", "resources", "max_concurrent", "checkpoint", "max_failures", "tracking", "scheduler")
SEARCH_KEYS = ("algorithm", "num_samples", "space", "scheduler", "seed")
ASHA_KEYS = ("type", "grace_period", "reduction_factor", "brackets")
#: ``scheduler:`` (population based training): its keys, and the options it may change during training.
POPULATION_KEYS = ("type", "perturbation_interval", "mutations", "quantile_fraction", "resample_probability",
                   "synch")
POPULATION_SCHEDULERS = ("pbt", "pb2")
MUTABLE_OPTIONS = ("rho", "xi", "delta", "meta_lr", "inner_steps")
#: ``tracking:``: experiment trackers every trial logs to, each with the keys it takes (docs/tracking.md).
TRACKERS: dict[str, tuple[str, ...]] = {
    "mlflow": ("tracking_uri", "experiment_name", "tags", "save_artifact"),
    "wandb": ("project", "entity", "group", "tags", "mode"),
}
WANDB_MODES = ("online", "offline", "disabled")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SearchSpec:
    """``search:``: sample ``num_samples`` trials from ``space`` ({option: {kind: args}})."""

    num_samples: int
    space: dict[str, dict[str, Any]]
    algorithm: str = "optuna"
    scheduler: dict[str, Any] | None = None  # {"type": "asha", "grace_period": .., "reduction_factor": ..}
    seed: int | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    """``scheduler:``: population based training (PBT, or PB2's GP-bandit explore) that changes the
    ``mutations`` options of the population every ``perturbation_interval`` epochs: trials in the
    bottom ``quantile_fraction`` continue from a top trial's checkpoint with perturbed options."""

    type: str
    perturbation_interval: int
    mutations: dict[str, dict[str, Any]]  # {option: {uniform|loguniform|int|choice: args}}
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    synch: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type, "perturbation_interval": self.perturbation_interval, "mutations": self.mutations,
               "quantile_fraction": self.quantile_fraction, "synch": self.synch}
        if self.type == "pbt":
            out["resample_probability"] = self.resample_probability
        return out


@dataclass(frozen=True)
class StudySpec:
    """A validated study. ``trial_configs()`` (grid) or ``base_config()`` (search) feed Ray."""

    name: str
    methods: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    cases: tuple[dict[str, Any], ...] = ()
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: SearchSpec | None = None
    metric: str = "test_acc"
    mode: str = "max"
    cpu: float = 1.0
    gpu: float = 0.0
    max_concurrent: int | None = None
    checkpoint_every: int = 1
    checkpoint_keep: int | None = 2
    max_failures: int = 2
    description: str = ""
    tracking: dict[str, dict[str, Any]] = field(default_factory=dict)  # {"mlflow": {...}, "wandb": {...}}
    schedule: ScheduleSpec | None = None  # population based training of some options

    @property
    def epochs(self) -> int:
        return int(self.options.get("epochs", TrainConfig.epochs))

    def planned_epochs(self) -> list[int]:
        """The ``epochs`` of every trial the study plans, in the order Tune creates them (grid: the
        order of ``trial_configs``; search: ``num_samples`` times the shared ``epochs``). Nothing is
        resolved, so this works on a saved ``study.yaml`` read anywhere."""
        if self.search is not None:
            return [self.epochs] * self.search.num_samples
        keys = list(self.grid)
        epochs = []
        for method in self.methods:
            for case in self.cases or ({},):
                if case.get("method", method) != method:
                    continue
                for values in itertools.product(*(self.grid[k] for k in keys)):
                    point = {**self.options, **case, **dict(zip(keys, values))}
                    epochs.append(int(point.get("epochs", TrainConfig.epochs)))
        return epochs

    @property
    def num_trials(self) -> int:
        """How many trials the study runs (grid: methods x cases x grid; search: ``num_samples``)."""
        return len(self.planned_epochs())

    def swept_keys(self) -> list[str]:
        """Options that differ between trials: ``method`` (if several), case, grid and search keys."""
        keys = ["method"] if len(self.methods) > 1 else []
        for source in (*self.cases, self.grid, self.search.space if self.search else {}):
            keys += [k for k in source if k not in keys and k != "method"]
        return keys

    @property
    def mutated_keys(self) -> tuple[str, ...]:
        """Options a population-based schedule changes during training (none without ``scheduler:``)."""
        return tuple(self.schedule.mutations) if self.schedule else ()

    def trial_configs(self, data_root: Path | None = None) -> list[dict[str, Any]]:
        """Grid mode: every trial's complete, resolved training options (methods x cases x grid).

        With ``data_root``, a relative or unset ``data_dir`` becomes absolute below it (trials run
        in their own working directories); unset means ``data/<dataset>``, as for ``ebomlc train``.
        """
        keys = list(self.grid)
        configs = []
        for method in self.methods:
            for case in self.cases or ({},):
                if case.get("method", method) != method:  # a case that names its method runs only that one
                    continue
                case = {k: v for k, v in case.items() if k != "method"}
                for values in itertools.product(*(self.grid[k] for k in keys)):
                    point = {**case, **dict(zip(keys, values))}
                    config = _resolve({**self.options, **point, "method": method}, _trial(method, point))
                    configs.append(_absolute_data_dir(config, data_root))
        return configs

    def base_config(self, data_root: Path | None = None) -> dict[str, Any]:
        """Search mode: the resolved options shared by every trial, without the searched keys."""
        assert self.search is not None
        method = self.methods[0]
        config = _absolute_data_dir(_resolve({**self.options, "method": method}, _trial(method, {})), data_root)
        return {k: v for k, v in config.items() if k not in self.search.space}

    def to_dict(self) -> dict[str, Any]:
        """The canonical YAML form (what ``study.yaml`` holds); ``load_spec`` reads it back."""
        options = dict(self.options)
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if "dataset" in options:
            out["dataset"] = options.pop("dataset")
        out["methods"] = list(self.methods)
        out["options"] = options
        if self.cases:
            out["cases"] = [dict(c) for c in self.cases]
        if self.grid:
            out["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.search:
            s = self.search
            out["search"] = {"algorithm": s.algorithm, "num_samples": s.num_samples, "space": s.space}
            if s.scheduler:
                out["search"]["scheduler"] = dict(s.scheduler)
            if s.seed is not None:
                out["search"]["seed"] = s.seed
        out.update(metric=self.metric, mode=self.mode, resources={"cpu": self.cpu, "gpu": self.gpu},
                   max_concurrent=self.max_concurrent,
                   checkpoint={"every": self.checkpoint_every, "keep": self.checkpoint_keep},
                   max_failures=self.max_failures)
        if self.tracking:
            out["tracking"] = {k: dict(v) for k, v in self.tracking.items()}
        if self.schedule:
            out["scheduler"] = self.schedule.to_dict()
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------------------- loading
def load_spec(spec: str | Path | Mapping[str, Any], check_trials: bool = True) -> StudySpec:
    """Parse and validate a study spec (a YAML file or an already-parsed mapping).

    Raises ``ConfigError`` with one line naming the bad key; every trial's options are resolved
    (method presets, ranges, label files exist), so a bad value anywhere in a grid fails here, not
    in a trial. ``check_trials=False`` skips that resolution, for a saved ``study.yaml`` read from
    another directory than the one its relative label-file paths were written for.
    """
    if isinstance(spec, Mapping):
        raw, where, default_name = dict(spec), "study spec", None
    else:
        path = Path(spec)
        where, default_name = path.name, path.stem
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read study spec {path}: {getattr(exc, 'strerror', None) or exc}") from None
        raw = parse_yaml(text, str(path))
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a study spec is a mapping of keys (name, methods, grid, ...)")
    try:
        return _parse(raw, default_name, check_trials)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error is one ``ConfigError`` line that says where:
    ``bad.yaml:4:7: not valid YAML: mapping values are not allowed here`` (line and column from 1)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem and exc.context_mark and exc.context_mark.line != getattr(mark, "line", None):
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"  # e.g. the unclosed bracket
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        raise ConfigError(f"{at}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:  # a reader error: a character YAML does not allow
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None


def _parse(raw: dict[str, Any], default_name: str | None, check_trials: bool = True) -> StudySpec:
    _known_keys("", raw, TOP_KEYS)
    name = check_name(raw.get("name", default_name))
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError("description: must be text")
    methods = _methods(raw.get("methods"))

    options = _mapping("options", raw.get("options"))
    for key in ("dataset", "data_dir"):
        if raw.get(key) is not None:
            if key in options:
                raise ConfigError(f"{key}: given both at the top level and under options; keep one")
            options[key] = raw[key]
    options = {k: _option_value(f"options.{k}", k, v) for k, v in options.items()}

    cases = raw.get("cases") or []  # a case may name its `method`: then it runs with that method only
    if not isinstance(cases, list) or not all(isinstance(c, dict) and c for c in cases):
        raise ConfigError("cases: must be a list of option mappings, e.g. "
                          "[{corruption_type: unif, corruption_level: 0.2}, ...]")
    cases = tuple({k: _case_method(f"cases[{i}].method", v, methods) if k == "method"
                   else _option_value(f"cases[{i}].{k}", k, v) for k, v in c.items()} for i, c in enumerate(cases))

    grid = {}
    for key, values in _mapping("grid", raw.get("grid")).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: must be a non-empty list of values, got {values!r}")
        grid[key] = [_option_value(f"grid.{key}", key, v) for v in values]

    search = _search(raw["search"], options.get("epochs", TrainConfig.epochs)) if raw.get("search") else None
    _check_overlaps(options, cases, grid, search)
    if search is not None:
        if grid or cases:
            raise ConfigError("search: cannot be combined with grid or cases; fix those values under options "
                              "(or run one study per setting)")
        if len(methods) != 1:
            raise ConfigError(f"methods: a search tunes one method, got {len(methods)} ({', '.join(methods)})")

    chooses = search is not None or raw.get("scheduler") is not None
    metric = raw.get("metric", "val_acc" if chooses else "test_acc")
    allowed = COMMON_METRICS + VAL_METRICS + (
        LABEL_CORRECTION_METRICS if all(METHODS[m].corrects_labels for m in methods) else ())
    if metric not in allowed:
        raise ConfigError(f"metric: {metric!r} is not reported by every trial of this study; "
                          f"choose one of: {', '.join(allowed)}")
    if chooses and metric in COMMON_METRICS:
        what = ("a population schedule copies the weights of the trials best by it" if raw.get("scheduler") is not None
                else "a search proposes and stops trials by it")
        raise ConfigError(f"metric: {metric} is measured on the test set, and {what}, which fits the choice to the "
                          f"test set (its test accuracy is then optimistic); write `metric: val_{metric[5:]}` and hold "
                          f"out a validation set with options.val_fraction (e.g. 0.1)")
    mode = raw.get("mode", "min" if metric.endswith("_loss") else "max")
    if mode not in ("max", "min"):
        raise ConfigError(f"mode: must be max or min, got {mode!r}")

    resources = _mapping("resources", raw.get("resources"))
    _known_keys("resources.", resources, ("cpu", "gpu"))
    cpu = _number("resources.cpu", resources.get("cpu", 1), low=0, low_open=True)
    gpu = _number("resources.gpu", resources.get("gpu", 0), low=0)
    if gpu > 1 and gpu != int(gpu):
        raise ConfigError(f"resources.gpu: a fraction must be below 1 (trials sharing a GPU), got {gpu}")
    if not any("threads" in place for place in (options, grid, *cases, search.space if search else {})):
        options["threads"] = max(1, int(cpu))  # what Ray gives a trial; recorded, so a CLI run can match it
    if search is not None and search.scheduler and int(options.get("eval_every", 1)) > 1:
        raise ConfigError(f"options.eval_every: early stopping (search.scheduler) compares {metric} every "
                          "epoch; use eval_every 1 or drop the scheduler")
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _integer("max_concurrent", max_concurrent, low=1)
    checkpoint = _mapping("checkpoint", raw.get("checkpoint"))
    _known_keys("checkpoint.", checkpoint, ("every", "keep"))
    every = _integer("checkpoint.every", checkpoint.get("every", 1), low=1)
    keep = checkpoint.get("keep", 2)
    keep = None if keep is None else _integer("checkpoint.keep", keep, low=1)
    max_failures = _integer("max_failures", raw.get("max_failures", 2), low=-1)
    tracking = _tracking(raw.get("tracking"))
    schedule = _schedule(raw["scheduler"], methods) if raw.get("scheduler") is not None else None
    if schedule is not None:
        if search is not None and search.scheduler:
            raise ConfigError("scheduler: a population schedule cannot be combined with search.scheduler (ASHA); "
                              "drop one")
        clash = [k for k in schedule.mutations if search is not None and k in search.space]
        if clash:
            raise ConfigError(f"scheduler.mutations.{clash[0]}: also in search.space; a mutated option starts from "
                              f"its options/cases/grid value, or from a draw of the mutation when unset")
        if keep is not None and keep < 3:
            raise ConfigError(f"checkpoint.keep: {keep} is too few for a population schedule, which continues trials "
                              f"from other trials' checkpoints; keep at least 3 (or null: all)")
        places = [options, grid, *cases]
        if any(int(v) != 1 for place in places for v in (place.get("eval_every", [1]) if isinstance(
                place.get("eval_every", 1), list) else [place.get("eval_every", 1)])):
            raise ConfigError("eval_every: a population schedule compares trials every epoch; use 1")
        if search is not None and search.algorithm == "optuna":
            raise ConfigError("search.algorithm: a population schedule draws its starting population at random "
                              "(Tune's PBT takes no search algorithm); set algorithm: random")
        if schedule.perturbation_interval % every:
            raise ConfigError(f"scheduler.perturbation_interval: {schedule.perturbation_interval} epochs is not a "
                              f"multiple of checkpoint.every ({every}); trials continue from checkpoints")

    spec = StudySpec(name=name, methods=methods, options=options, cases=cases, grid=grid, search=search,
                     metric=metric, mode=mode, cpu=cpu, gpu=gpu, max_concurrent=max_concurrent,
                     checkpoint_every=every, checkpoint_keep=keep, max_failures=max_failures,
                     description=description, tracking=tracking, schedule=schedule)
    if not check_trials:
        return spec
    if search is None:
        configs = spec.trial_configs()  # resolves (validates) every trial's options
    else:
        _check_search_bounds(spec)
        configs = [spec.base_config()]
    if metric in VAL_METRICS:
        without = next((c for c in configs if not TrainConfig.from_dict(c).has_validation), None)
        if without is not None:
            where = "the search's options" if search is not None else _trial(without["method"], {
                k: without[k] for k in spec.swept_keys() if k in without})
            raise ConfigError(f"metric: {metric} needs a validation set, but {where} has none; set "
                              f"options.val_fraction (e.g. 0.1, with val_source clean or noisy) or "
                              f"options.val_source: gold_reused")
    if schedule is not None:
        _check_bounds(spec, schedule.mutations, "scheduler.mutations")
    return spec


def _case_method(where: str, value: Any, methods: tuple[str, ...]) -> str:
    """A case's own ``method``: it must be one of ``methods`` (the case then runs only with it)."""
    if value not in methods:
        raise ConfigError(f"{where}: {value!r} is not one of the study's methods ({', '.join(methods)})")
    return value


def check_name(name: Any, where: str = "name") -> str:
    """A study name: the experiment directory under the storage."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: a study name of letters, digits, '_', '.', '-' is required, got {name!r}")
    return name


def _methods(value: Any) -> tuple[str, ...]:
    methods = [value] if isinstance(value, str) else value
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"methods: list the methods to run, e.g. [ce, mlc, mlcbome, ebomlc]; "
                          f"choose from {', '.join(METHODS)}")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ConfigError("methods: a method is listed twice")
    return tuple(methods)


def _search(raw: Any, epochs: Any) -> SearchSpec:
    raw = _mapping("search", raw)
    _known_keys("search.", raw, SEARCH_KEYS)
    algorithm = raw.get("algorithm", "optuna")
    if algorithm not in SEARCH_ALGORITHMS:
        raise ConfigError(f"search.algorithm: unknown {algorithm!r}; choose one of: {', '.join(SEARCH_ALGORITHMS)}")
    if "num_samples" not in raw:
        raise ConfigError("search.num_samples: how many trials to sample is required")
    num_samples = _integer("search.num_samples", raw["num_samples"], low=1)
    space = _mapping("search.space", raw.get("space"))
    if not space:
        raise ConfigError("search.space: name at least one option to search, e.g. {rho: {uniform: [0.0, 1.0]}}")
    space = {key: _distribution(f"search.space.{key}", key, dist) for key, dist in space.items()}
    seed = raw.get("seed")
    seed = None if seed is None else _integer("search.seed", seed, low=0)
    scheduler = raw.get("scheduler")
    if scheduler is not None:
        scheduler = {"type": scheduler} if isinstance(scheduler, str) else _mapping("search.scheduler", scheduler)
        _known_keys("search.scheduler.", scheduler, ASHA_KEYS)
        if scheduler.get("type", "asha") != "asha":
            raise ConfigError(f"search.scheduler.type: only 'asha' is supported, got {scheduler['type']!r}")
        max_t = _integer("options.epochs", epochs, low=1)
        scheduler = {"type": "asha",
                     "grace_period": _integer("search.scheduler.grace_period", scheduler.get("grace_period", 1),
                                              low=1, high=max_t),
                     "reduction_factor": _number("search.scheduler.reduction_factor",
                                                 scheduler.get("reduction_factor", 3), low=1, low_open=True),
                     "brackets": _integer("search.scheduler.brackets", scheduler.get("brackets", 1), low=1)}
    return SearchSpec(num_samples=num_samples, space=space, algorithm=algorithm, scheduler=scheduler, seed=seed)


def _tracking(raw: Any) -> dict[str, dict[str, Any]]:
    """``tracking: {mlflow: {...}, wandb: {...}}``: each tracker's keys checked (not its package:
    a saved ``study.yaml`` must read back where the tracker is not installed)."""
    trackers = _mapping("tracking", raw)
    _known_keys("tracking.", trackers, tuple(TRACKERS))
    out = {}
    for tracker, settings in trackers.items():
        where = f"tracking.{tracker}"
        settings = _mapping(where, settings)  # `mlflow:` alone: every default
        _known_keys(f"{where}.", settings, TRACKERS[tracker])
        for key, value in settings.items():
            if key == "tags":
                if tracker == "wandb":
                    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                        raise ConfigError(f"{where}.tags: must be a list of text, e.g. [baseline, digits]")
                elif not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool))
                                                            for v in value.values()):
                    raise ConfigError(f"{where}.tags: must be a mapping of names to values, e.g. {{team: nlp}}")
            elif key == "save_artifact":
                _flag(f"{where}.save_artifact", value)
            elif not isinstance(value, str) or not value:
                raise ConfigError(f"{where}.{key}: must be text, got {value!r}")
        if tracker == "wandb":
            if "project" not in settings:
                raise ConfigError(f"{where}.project: the W&B project to log to is required")
            if settings.get("mode", "online") not in WANDB_MODES:
                raise ConfigError(f"{where}.mode: must be one of {', '.join(WANDB_MODES)}, got {settings['mode']!r}")
        out[tracker] = settings
    return out


def tracking_uri(uri: str | None, root: Path | None) -> str | None:
    """An MLflow ``tracking_uri`` resolved like ``data_dir``: a relative path (or ``sqlite:///``
    file) becomes absolute below ``root``, a path becomes a ``file://`` URI; other URIs
    (``http://``, ``databricks``, ``file:///abs``) and None (MLflow's default) are unchanged."""
    if uri is None or root is None or uri == "databricks" or uri.startswith("databricks:"):
        return uri
    if uri.startswith("sqlite:///"):
        file = uri[len("sqlite:///"):]
        return uri if file.startswith("/") or file == ":memory:" else "sqlite:///" + str((root / file).resolve())
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return uri
    return (root / Path(uri).expanduser()).resolve().as_uri()


def _distribution(where: str, key: str, dist: Any) -> dict[str, Any]:
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: {key} cannot be searched (it defines the problem); set it under options")
    _option_name(where, key)
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(f"{where}: give one distribution, e.g. {{uniform: [0.1, 1.0]}}; "
                          f"kinds: {', '.join(DISTRIBUTIONS)}")
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; choose one of: {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.choice: must be a non-empty list of values")
        return {"choice": [_option_value(f"{where}.choice", key, v) for v in args]}
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(f"{where}.{kind}: must be [low, high], got {args!r}")
    if kind == "int":
        low, high = (_integer(f"{where}.int", a) for a in args)
    else:
        low, high = (_number(f"{where}.{kind}", a) for a in args)
    if not low < high:
        raise ConfigError(f"{where}.{kind}: low must be below high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.loguniform: bounds must be positive, got [{low}, {high}]")
    return {kind: [low, high]}


def _check_search_bounds(spec: StudySpec) -> None:
    """Resolve the base options with each end of every range (and every choice) to catch bad values."""
    _check_bounds(spec, spec.search.space, "search.space")


def _check_bounds(spec: StudySpec, space: dict[str, dict[str, Any]], where: str) -> None:
    base = {**spec.options, "method": spec.methods[0]}
    for key, dist in space.items():
        (kind, values), = dist.items()
        for value in values:
            _resolve({**base, key: _option_value(f"{where}.{key}", key, value)}, f"{where}.{key}")


def _schedule(raw: Any, methods: tuple[str, ...]) -> ScheduleSpec:
    """``scheduler: {type: pbt|pb2, perturbation_interval: E, mutations: {rho: {uniform: [0, 1]}, ...}}``."""
    raw = {"type": raw} if isinstance(raw, str) else _mapping("scheduler", raw)
    _known_keys("scheduler.", raw, POPULATION_KEYS)
    kind = raw.get("type")
    if kind not in POPULATION_SCHEDULERS:
        raise ConfigError(f"scheduler.type: choose one of {', '.join(POPULATION_SCHEDULERS)} (population based "
                          f"training), got {kind!r}; early stopping is search.scheduler: asha")
    mutations = _mapping("scheduler.mutations", raw.get("mutations"))
    if not mutations:
        raise ConfigError("scheduler.mutations: name the options to adapt, e.g. {rho: {uniform: [0.0, 1.0]}, "
                          "xi: {loguniform: [0.1, 2.0]}}")
    for key in mutations:
        if key not in MUTABLE_OPTIONS:
            raise ConfigError(f"scheduler.mutations.{key}: cannot change during training; mutable options are "
                              f"{', '.join(MUTABLE_OPTIONS)}")
    needs = [m for m in methods if m not in ("mlcbome", "ebomlc")]
    barrier_keys = [k for k in mutations if k in ("rho", "xi", "delta")]
    if needs and barrier_keys:
        raise ConfigError(f"scheduler.mutations.{barrier_keys[0]}: only mlcbome and ebomlc read it, but the study "
                          f"also runs {', '.join(needs)}")
    mutations = {k: _distribution(f"scheduler.mutations.{k}", k, d) for k, d in mutations.items()}
    if kind == "pb2":
        other = next((k for k, d in mutations.items() if "choice" in d or "int" in d), None)
        if other is not None:
            raise ConfigError(f"scheduler.mutations.{other}: pb2 adapts continuous ranges (uniform, loguniform), "
                              f"not choices or integers; use pbt")
    fraction = _number("scheduler.quantile_fraction", raw.get("quantile_fraction", 0.25), low=0, low_open=True)
    if fraction > 0.5:
        raise ConfigError(f"scheduler.quantile_fraction: at most 0.5 (the bottom share copies the top share), "
                          f"got {fraction}")
    return ScheduleSpec(
        type=kind, mutations=mutations,
        perturbation_interval=_integer("scheduler.perturbation_interval", raw.get("perturbation_interval", 2), low=1),
        quantile_fraction=fraction,
        resample_probability=_probability("scheduler.resample_probability", raw.get("resample_probability", 0.25)),
        synch=_flag("scheduler.synch", raw.get("synch", False)))


def _probability(where: str, value: Any) -> float:
    number = _number(where, value, low=0)
    if number > 1:
        raise ConfigError(f"{where}: a probability in [0, 1], got {value!r}")
    return number


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _check_overlaps(options: dict, cases: tuple[dict, ...], grid: dict, search: SearchSpec | None) -> None:
    places = [("options", options), ("grid", grid), ("search.space", search.space if search else {})]
    places += [(f"cases[{i}]", c) for i, c in enumerate(cases)]
    seen: dict[str, str] = {}
    for place, keys in places:
        for key in keys:
            other = seen.get(key)
            if other is not None and not (other.startswith("cases") and place.startswith("cases")):
                raise ConfigError(f"{place}.{key}: also set in {other}; set each option in one place")
            seen.setdefault(key, place)


def _absolute_data_dir(config: dict[str, Any], root: Path | None) -> dict[str, Any]:
    data_dir = config["data_dir"]
    if root is None or (data_dir is None and config["dataset"] == "digits"):
        return config
    data_dir = data_dir or f"data/{config['dataset']}"  # ebomlc.data.load_dataset's default
    if data_dir.startswith("~") or "://" in data_dir:
        return config
    return {**config, "data_dir": str((root / data_dir).resolve())}


def _resolve(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``TrainConfig(**options).resolved()`` as a flat dict; errors start with ``where``."""
    try:
        config = TrainConfig(**options).resolved().to_dict()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    config.pop("runid", None)
    return config


def _trial(method: str, point: dict[str, Any]) -> str:
    """A trial's label in errors: ``trial method=ce, seed=1`` (its method and swept values)."""
    return "trial " + ", ".join(f"{k}={v}" for k, v in {"method": method, **point}.items())


# ---------------------------------------------------------------------------------------- values
def _known_keys(prefix: str, mapping: dict, known: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key{_did_you_mean(key, known)}; known: {', '.join(known)}")


def _did_you_mean(key: Any, known) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {value!r}")
    return dict(value)


def _option_name(where: str, key: Any) -> None:
    if key == "method":
        raise ConfigError(f"{where}: list methods under the top-level 'methods' key")
    if key not in OPTIONS:
        raise ConfigError(f"{where}: unknown training option{_did_you_mean(key, OPTIONS)} "
                          f"(options are those of `ebomlc train`: {', '.join(OPTIONS)})")


def _option_value(where: str, key: Any, value: Any) -> Any:
    """``value`` converted to the type of TrainConfig field ``key`` (YAML reads 1e-4 as text)."""
    _option_name(where, key)
    kind = OPTIONS[key]
    if value is None:
        if "None" not in kind:
            raise ConfigError(f"{where}: {key} cannot be null")
        return None
    if key == "departures" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)  # a YAML list of parts, or one comma-separated string
    if kind.startswith("tuple"):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list of integers, got {value!r}")
        return [_integer(where, v) for v in value]
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if kind.startswith("int"):
        return _integer(where, value)
    if kind.startswith("float"):
        return _number(where, value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be text, got {value!r}")
    return value


def _as_float(where: str, value: Any, what: str) -> float:
    """``float(value)`` for a number or numeric text (not a bool); else "must be ``what``"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: must be {what}, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{where}: must be {what}, got {value!r}") from None


def _number(where: str, value: Any, low: float | None = None, low_open: bool = False) -> float:
    number = _as_float(where, value, "a number")
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        raise ConfigError(f"{where}: must be {'above' if low_open else 'at least'} {low:g}, got {value!r}")
    return number


def _integer(where: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    number = _as_float(where, value, "an integer")
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{where}: must be {bound}, got {value!r}")
    return int(number)
