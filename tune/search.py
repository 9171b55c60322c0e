"""From a ``StudySpec`` to Ray Tune's search algorithm, scheduler and parameter space.

A grid study hands Tune its explicit list of trial configs (``TrialList``), so every trial's
``params.json`` is its complete, resolved training options. A search study hands Tune the shared
options plus Ray search-space domains, sampled by Optuna's TPE (or at random), optionally with an
ASHA scheduler stopping poor trials early on the ``epoch`` axis.
"""
from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune as ray_tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from .spec import StudySpec


class TrialList(Searcher):
    """Suggests a fixed list of configs in order, then finishes. Its position survives resume."""

    def __init__(self, configs: list[dict[str, Any]]):
        super().__init__()
        self.configs = configs
        self.position = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self.position >= len(self.configs):
            return Searcher.FINISHED
        self.position += 1
        return copy.deepcopy(self.configs[self.position - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"configs": self.configs, "position": self.position}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.configs, self.position = state["configs"], state["position"]


@dataclass
class SearchSetup:
    """What ``tune.Tuner`` needs from a spec."""

    param_space: dict[str, Any]
    search_alg: Any
    scheduler: TrialScheduler | None
    num_samples: int
    known_configs: list[dict[str, Any]]  # every trial's options (grid), or the shared ones (search)


def search_setup(spec: StudySpec, data_root: Path | None = None) -> SearchSetup:
    """The param space, search algorithm, scheduler and trial count of ``spec``."""
    if spec.schedule is not None:
        return _population_setup(spec, data_root)
    if spec.search is None:
        configs = spec.trial_configs(data_root)
        return SearchSetup({}, TrialList(configs), None, len(configs), configs)
    search = spec.search
    space = {key: _domain(dist) for key, dist in search.space.items()}
    scheduler = None
    if search.scheduler:
        s = search.scheduler
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.epochs, grace_period=s["grace_period"],
                                  reduction_factor=s["reduction_factor"], brackets=s["brackets"])
    base = spec.base_config(data_root)
    if search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(space, metric=spec.metric, mode=spec.mode,
                                  sampler=optuna.samplers.TPESampler(seed=search.seed))
        return SearchSetup(base, search_alg, scheduler, search.num_samples, [base])
    from ray.tune.search import BasicVariantGenerator

    return SearchSetup({**base, **space}, BasicVariantGenerator(random_state=search.seed), scheduler,
                       search.num_samples, [base])


@dataclass(frozen=True)
class ClipToBounds:
    """PBT's explore step, completed: Tune multiplies a continuous option by 0.8 or 1.2 without regard to
    its range (rho 0.94 -> 1.13); this clips every mutated value back into its ``[low, high]``."""

    bounds: dict[str, tuple[float, float, bool]]  # option -> (low, high, integer)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high, integer) in self.bounds.items():
            if key in config and config[key] is not None:
                value = min(max(config[key], low), high)
                config[key] = int(round(value)) if integer else float(value)
        return config


def _bounds(mutations: dict[str, dict[str, Any]]) -> ClipToBounds:
    ranges = {}
    for key, dist in mutations.items():
        (kind, args), = dist.items()
        if kind != "choice":
            ranges[key] = (args[0], args[1], kind == "int")
    return ClipToBounds(ranges)


def _population_setup(spec: StudySpec, data_root: Path | None) -> SearchSetup:
    """PBT / PB2: the grid's (or search's) trials are the starting population. A mutated option that no
    options/cases/grid entry sets is left out of the trial's config, so the scheduler draws its starting
    value from the mutation. Tune's PBT refuses a ``Searcher``, so trials come from a
    ``BasicVariantGenerator`` (points to evaluate, or samples of the search space)."""
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.schedulers import PopulationBasedTraining

    schedule = spec.schedule
    given = set(spec.options) | set(spec.grid) | {k for case in spec.cases for k in case}
    drawn = [k for k in schedule.mutations if k not in given]
    common = dict(time_attr="epoch", perturbation_interval=schedule.perturbation_interval,
                  quantile_fraction=schedule.quantile_fraction, synch=schedule.synch)
    if schedule.type == "pbt":
        scheduler = PopulationBasedTraining(
            hyperparam_mutations={k: _domain(d) for k, d in schedule.mutations.items()},
            resample_probability=schedule.resample_probability, custom_explore_fn=_bounds(schedule.mutations),
            **common)
    else:
        from ray.tune.schedulers.pb2 import PB2

        scheduler = PB2(hyperparam_bounds={k: next(iter(d.values())) for k, d in schedule.mutations.items()},
                        **common)
    if spec.search is not None:
        base = {k: v for k, v in spec.base_config(data_root).items() if k not in drawn}
        space = {key: _domain(dist) for key, dist in spec.search.space.items()}
        return SearchSetup({**base, **space}, BasicVariantGenerator(random_state=spec.search.seed), scheduler,
                           spec.search.num_samples, [base])
    configs = [{k: v for k, v in c.items() if k not in drawn} for c in spec.trial_configs(data_root)]
    # every trial has the same keys: the first config is the space, each trial a point overriding it
    return SearchSetup(copy.deepcopy(configs[0]), BasicVariantGenerator(points_to_evaluate=copy.deepcopy(configs)),
                       scheduler, len(configs), configs)


def _domain(dist: dict[str, Any]):
    (kind, args), = dist.items()
    if kind == "choice":
        return ray_tune.choice(args)
    if kind == "int":
        return ray_tune.randint(args[0], args[1] + 1)  # spec ranges are inclusive
    return getattr(ray_tune, kind)(*args)
