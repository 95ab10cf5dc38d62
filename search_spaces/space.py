"""What a study is: its factors, budgets and design points, and the config each trial gets.

The config of a trial is built in this order, later entries overriding earlier ones:
base -> the budget's TrainConfig keys -> the factor values of its design point -> `seed`.
`load_space` (loader.py) builds a validated `SearchSpace` from a YAML file.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnsearch.config import TrainConfig

from .levels import FrozenDict, freeze, jsonable, level_key, level_label
from .modes import mode_error
from .schedulers import DEFAULT_SCHEDULER, SCHEDULERS, SETTINGS

__all__ = [
    "BUDGETS", "DESIGNS", "DISTRIBUTIONS", "CONTINUOUS", "TRAIN_KEYS", "TRAIN_DEFAULTS", "SpaceError", "Factor",
    "Budget", "DesignPoint", "SearchSpace", "set_factor",
]

BUDGETS = ("smoke", "cpu", "full")  # tests / a 2-core CPU in about an hour / the reports' recipe on a GPU
DESIGNS = ("one_at_a_time", "grid", "sample")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")  # randint: high exclusive
CONTINUOUS = ("uniform", "loguniform", "randint")  # sampled numbers: no levels

TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


class SpaceError(ValueError):
    """A search space that cannot run; the message is one line naming the file and the key."""


def set_factor(config: dict[str, Any], name: str, value: Any) -> None:
    """Set factor `name` to `value` in `config`: one key, or every key of a multi-key level (a
    mapping under a name that is not a TrainConfig key)."""
    if name not in TRAIN_KEYS and isinstance(value, Mapping):
        config.update(value)
    else:
        config[name] = value


@dataclass(frozen=True)
class Factor:
    """One thing a study varies. Exactly one of `levels` (a fixed list, run in order; for
    one_at_a_time the first is the baseline) and `distribution` (sample designs), e.g.
    `("loguniform", (1e-4, 1e-2))` or `("choice", ("adam", "sgd"))`. A level that is a mapping sets
    several TrainConfig keys at once; such a factor's name is a label, not a TrainConfig key."""

    name: str
    levels: tuple | None = None
    distribution: tuple[str, tuple] | None = None

    def __post_init__(self) -> None:
        if (self.levels is None) == (self.distribution is None):
            raise SpaceError(f"factor {self.name}: give exactly one of levels and distribution")
        if self.levels is not None:
            object.__setattr__(self, "levels", freeze(self.levels))
        else:
            kind, args = self.distribution
            if kind not in DISTRIBUTIONS:
                raise SpaceError(f"factor {self.name}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                                 f"got {kind!r}")
            object.__setattr__(self, "distribution", (kind, freeze(args)))

    @property
    def kind(self) -> str:
        """"levels", or the distribution's kind."""
        return "levels" if self.levels is not None else self.distribution[0]

    @property
    def values(self) -> tuple:
        """The levels, a choice's values, or a numeric distribution's [low, high]."""
        return self.levels if self.levels is not None else self.distribution[1]

    @property
    def continuous(self) -> bool:
        """Drawn from a numeric distribution: no levels to compare."""
        return self.kind in CONTINUOUS

    @property
    def multi_key(self) -> bool:
        """True when the levels (or choices) are mappings that set several TrainConfig keys."""
        return self.name not in TRAIN_KEYS

    @property
    def keys(self) -> tuple[str, ...]:
        """The TrainConfig keys this factor sets."""
        if not self.multi_key:
            return (self.name,)
        return tuple(dict.fromkeys(k for v in self.values if isinstance(v, Mapping) for k in v))

    def by_key(self) -> dict[str, Any]:
        """Canonical level key (levels.level_key) -> level, in the space's order; empty when continuous."""
        return {} if self.continuous else {level_key(v): v for v in self.values}

    def level_labels(self) -> dict[str, str]:
        """Canonical level key -> the level as people read it (levels.level_label), for display."""
        return {key: level_label(level) for key, level in self.by_key().items()}

    def label(self, level: Any) -> str:
        """This factor at `level` as a point label writes it: `dropout=0.4`, or a multi-key level's
        own keys (`optimizer=sgd,lr=0.001`)."""
        return level_label(level) if self.multi_key else f"{self.name}={level_label(level)}"


@dataclass(frozen=True)
class Budget:
    """How much compute a study gets: TrainConfig overrides (epochs, width, train_subset, ...), the
    schedulers' settings (schedulers.SETTINGS: ASHA's grace period, the reduction factor), each at its
    default unless the budget sets it, and `seeds` when this budget repeats points more (or less) often than
    the space's `seeds` (None: the space's), and `base_seeds` likewise for the base point's."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, int] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    base_seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.name not in BUDGETS:
            raise SpaceError(f"budget must be one of {', '.join(BUDGETS)}, got {self.name!r}")
        object.__setattr__(self, "overrides", freeze(dict(self.overrides)))
        object.__setattr__(self, "settings", FrozenDict({k: self.settings.get(k, s.default) for k, s in SETTINGS.items()}))


@dataclass(frozen=True)
class DesignPoint:
    """One setting of the factors. `values` maps factor names to the level this point sets (empty
    for the base point); `factor` is the one factor changed (one_at_a_time) or None (base, grid)."""

    label: str
    factor: str | None
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", freeze(dict(self.values)))

    @property
    def level(self) -> Any:
        """The level of `factor` at this point (None for the base point)."""
        return self.values.get(self.factor) if self.factor else None

    def param(self) -> dict[str, Any]:
        """This point as the `design_point` trial param: {"label", "factor", "level"}, JSON-able."""
        return {"label": self.label, "factor": self.factor, "level": jsonable(self.level)}


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; `load_space` builds one from a YAML file."""

    name: str
    path: Path
    description: str
    source: str
    base: Mapping[str, Any]
    factors: tuple[Factor, ...]
    design: str
    num_samples: int
    seeds: tuple[int, ...]
    metric: str
    mode: str
    budgets: Mapping[str, Budget]
    scheduler: str = DEFAULT_SCHEDULER  # what tune.run uses when --scheduler is not given
    # one_at_a_time: the base point's seeds, `seeds` and more (None: `seeds`). Every pair compares a point
    # with the base, so its seeds count in every comparison: with k points beside the base, about
    # sqrt(k) times the seeds of a point minimises the pairs' variance for the trials spent.
    base_seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise SpaceError(f"{self.path.name}: design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if (error := mode_error(self.mode)) is not None:
            raise SpaceError(f"{self.path.name}: mode {error}")
        if tuple(self.budgets) != BUDGETS:
            raise SpaceError(f"{self.path.name}: budgets must be {', '.join(BUDGETS)}, in that order")
        if not self.seeds:
            raise SpaceError(f"{self.path.name}: seeds must not be empty")
        if self.scheduler not in SCHEDULERS:
            raise SpaceError(f"{self.path.name}: scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        object.__setattr__(self, "base", freeze(dict(self.base)))
        object.__setattr__(self, "factors", tuple(self.factors))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "budgets", FrozenDict(self.budgets))
        for budget in self.budgets:
            own = self.budgets[budget].base_seeds
            extra, where = (own, f"budgets.{budget}.base_seeds") if own else (self.base_seeds, "base_seeds")
            if extra is None:
                continue
            if self.design != "one_at_a_time":
                raise SpaceError(f"{self.path.name}: {where}: needs design one_at_a_time (a {self.design} design "
                                 f"has no shared base point); drop it")
            missing = [s for s in self.seeds_for(budget) if s not in extra]
            if missing:
                raise SpaceError(f"{self.path.name}: {where}: must include every seed the other points run at "
                                 f"budget {budget}; add {', '.join(map(str, missing))}")

    def seeds_for(self, budget: str) -> tuple[int, ...]:
        """The seeds every design point runs at `budget`: the budget's own, else the space's."""
        return self.budgets[budget].seeds or self.seeds

    def base_seeds_for(self, budget: str) -> tuple[int, ...]:
        """The seeds the base point runs at `budget`: the budget's `base_seeds`, else the space's, else
        `seeds_for(budget)`; the seeds of the other points come first."""
        seeds = self.seeds_for(budget)
        extra = self.budgets[budget].base_seeds or self.base_seeds or ()
        return seeds + tuple(s for s in extra if s not in seeds)

    def num_trials(self, budget: str) -> int | None:
        """How many trials a fixed design runs at `budget`, counted without making them (None: sample)."""
        if self.design == "sample":
            return None
        extra = len(self.base_seeds_for(budget)) - len(self.seeds_for(budget))
        return self.num_points * len(self.seeds_for(budget)) + extra

    def trials(self, budget: str) -> Iterator[tuple[DesignPoint, int]]:
        """(point, seed) of every trial of a fixed design at `budget`, in the order they start: each seed
        across all points in turn (a run cut short has whole replicates), then the base point's extra seeds."""
        points = self.points()
        seeds = self.seeds_for(budget)
        for seed in seeds:
            for point in points:
                yield point, seed
        for seed in self.base_seeds_for(budget)[len(seeds):]:
            yield points[0], seed

    @property
    def num_points(self) -> int | None:
        """How many design points `points()` gives, counted without making them (None for sample)."""
        if self.design == "sample":
            return None
        if self.design == "one_at_a_time":
            return 1 + sum(len(f.levels) - 1 for f in self.factors)
        return math.prod(len(f.levels) for f in self.factors)

    def points(self) -> list[DesignPoint]:
        """The design points. one_at_a_time: the base point, then one point per non-baseline level of
        each factor. grid: the full factorial, labelled "k1=v1,k2=v2". sample: raises SpaceError."""
        return [point for _, point in self.design_points()]

    def config(self, budget: str, point: DesignPoint | None = None, seed: int = 0, **sampled: Any) -> dict[str, Any]:
        """The flat TrainConfig dict of one trial (JSON-able: tuples as lists): base, the budget's
        keys, the point's factor values (None: the base point), `sampled` factor values, `seed`."""
        if budget not in self.budgets:
            raise SpaceError(f"{self.path.name}: unknown budget {budget!r}; budgets are: {', '.join(BUDGETS)}")
        names = [f.name for f in self.factors]
        unknown = sorted(set(sampled) - set(names))
        if unknown:
            raise SpaceError(f"{self.path.name}: unknown factor(s) {', '.join(unknown)}; "
                             f"factors are: {', '.join(names) or 'none'}")
        config = {**self.base, **self.budgets[budget].overrides}
        for name, value in [*(point.values.items() if point is not None else ()), *sampled.items()]:
            set_factor(config, name, value)
        config["seed"] = seed
        return jsonable(config)

    def max_epochs(self, budget: str) -> int:
        """The most epochs any trial of `budget` runs (the schedulers' max_t)."""
        epochs = [self.config(budget).get("epochs", TRAIN_DEFAULTS["epochs"])]
        for factor in self.factors:
            if "epochs" not in factor.keys:
                continue
            if not factor.continuous:
                epochs += [v.get("epochs") if factor.multi_key else v for v in factor.values]
            else:
                low, high = factor.values
                epochs.append(high - 1 if factor.kind == "randint" else high)
        return int(max(e for e in epochs if isinstance(e, numbers.Real)))

    def design_points(self) -> Iterator[tuple[str, DesignPoint]]:
        """(key path of the levels it uses, point) for every design point, base point first."""
        if self.design == "sample":
            raise SpaceError(f"{self.path.name}: design sample has no fixed points; its factors are drawn "
                             f"from distributions (tune/ samples them)")
        if self.design == "one_at_a_time":
            yield "base", DesignPoint("base", None, {})
            for factor in self.factors:
                for i, level in enumerate(factor.levels[1:], start=1):
                    yield f"factors.{factor.name}.levels[{i}]", DesignPoint(factor.label(level), factor.name,
                                                                            {factor.name: level})
            return
        indexed = [list(enumerate(f.levels)) for f in self.factors]
        for combo in itertools.product(*indexed):
            values = {f.name: level for f, (_, level) in zip(self.factors, combo)}
            where = " + ".join(f"factors.{f.name}.levels[{i}]" for f, (i, _) in zip(self.factors, combo))
            label = ",".join(f.label(level) for f, (_, level) in zip(self.factors, combo)) or "base"
            yield where or "base", DesignPoint(label, None, values)
