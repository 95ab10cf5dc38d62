"""Search spaces: YAML files saying what a study varies, how (design) and at which budget.

A space is loaded and fully validated here, before Ray starts: every design point's config, at every
budget, must pass `TrainConfig.from_dict`. Nothing here imports Ray; `tune/` turns a `SearchSpace`
into `ray.tune` domains and `trial_config` turns a trial's params back into a flat TrainConfig dict.

The config of a trial is built in this order, later entries overriding earlier ones:
base -> the budget's TrainConfig keys -> the factor values of its design point -> `seed`.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import yaml

from cnnsearch.config import MODEL_OPTION_KEYS, TrainConfig
from cnnsearch.yamlio import load_yaml
from cnnsearch.models import list_models, model_options

__all__ = [
    "BUDGETS", "DESIGNS", "DISTRIBUTIONS", "METRICS", "Budget", "DesignPoint", "Factor", "SearchSpace",
    "SpaceError", "list_spaces", "load_space", "trial_config",
]

BUDGETS = ("smoke", "cpu", "full")  # tests / a 2-core CPU in about an hour / the reports' recipe on a GPU
DESIGNS = ("one_at_a_time", "grid", "sample")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")  # randint: high exclusive
METRICS = {"val_acc": "max", "val_loss": "min", "train_acc": "max", "train_loss": "min"}  # metric -> default mode
ASHA_KEYS = ("grace_period", "reduction_factor")
TOP_KEYS = ("description", "source", "base", "factors", "design", "num_samples", "seeds", "metric", "mode",
            "budgets")
DEFAULT_NUM_SAMPLES = 20
DESIGN_POINT_KEY = "design_point"  # the trial param that carries a one-at-a-time point

TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_KEY_LIST = ", ".join(sorted(k for k in TRAIN_KEYS if k != "seed"))
_SHIPPED_DIR = Path(__file__).resolve().parent
_MODEL_KEYS = ("model", *MODEL_OPTION_KEYS)  # what the meta-device build depends on (with the data set)
_CHEAP_MODEL = "basecnn"  # the fastest to build: checks the training keys without a costly build


class SpaceError(ValueError):
    """A search space that cannot run; the message is one line naming the file and the key."""


def _fail(file: str, where: str | None, message: str) -> NoReturn:
    text = f"{file}: {where}: {message}" if where else f"{file}: {message}"
    raise SpaceError(" ".join(text.split()))  # one line, whatever the wrapped error looked like


class _FrozenDict(dict):
    """A read-only dict: JSON-able and picklable (Ray copies params), unlike MappingProxyType."""

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("search space values are read-only; copy with dict(...) to change them")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly  # type: ignore

    def __reduce__(self) -> tuple:
        return (_FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(_canon(self))


def _freeze(value: Any) -> Any:
    """YAML values as immutable ones: lists -> tuples, mappings -> read-only dicts."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return _FrozenDict({k: _freeze(v) for k, v in value.items()})
    return value


def _jsonable(value: Any) -> Any:
    """Tuples -> lists and mappings -> plain dicts, recursively (what a config dict holds)."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _canon(value: Any) -> Any:
    """A hashable key under which equal settings compare equal (1 == 1.0, but True != 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, numbers.Real):
        return ("num", float(value))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_canon(v) for v in value))
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((str(k), _canon(v)) for k, v in value.items())))
    return ("other", repr(value))


def _fmt(value: Any) -> str:
    """A value as it appears in a point label: YAML-like, no spaces (`[3,3,3,3]`, `true`, `0.001`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _is_multi_key(name: str, value: Any) -> bool:
    """A mapping value under a name that is not a TrainConfig key sets several keys at once."""
    return name not in TRAIN_KEYS and isinstance(value, Mapping)


def _apply(config: dict[str, Any], name: str, value: Any) -> None:
    """Set factor `name` to `value` in `config`: one key, or every key of a multi-key level."""
    if _is_multi_key(name, value):
        config.update(value)
    else:
        config[name] = value


# ------------------------------------------------------------------------------------ dataclasses
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
            object.__setattr__(self, "levels", _freeze(self.levels))
        else:
            kind, args = self.distribution
            if kind not in DISTRIBUTIONS:
                raise SpaceError(f"factor {self.name}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                                 f"got {kind!r}")
            object.__setattr__(self, "distribution", (kind, _freeze(args)))

    @property
    def multi_key(self) -> bool:
        """True when the levels (or choices) are mappings that set several TrainConfig keys."""
        return self.name not in TRAIN_KEYS

    @property
    def keys(self) -> tuple[str, ...]:
        """The TrainConfig keys this factor sets."""
        if not self.multi_key:
            return (self.name,)
        values = self.levels if self.levels is not None else self.distribution[1]
        return tuple(dict.fromkeys(k for v in values for k in v))


@dataclass(frozen=True)
class Budget:
    """How much compute a study gets: TrainConfig overrides (epochs, width, train_subset, ...) and
    ASHA's grace period (epochs before the first cut) and reduction factor (keep 1/N per rung)."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        if self.name not in BUDGETS:
            raise SpaceError(f"budget must be one of {', '.join(BUDGETS)}, got {self.name!r}")
        object.__setattr__(self, "overrides", _freeze(dict(self.overrides)))


@dataclass(frozen=True)
class DesignPoint:
    """One setting of the factors. `values` maps factor names to the level this point sets (empty
    for the base point); `factor` is the one factor changed (one_at_a_time) or None (base, grid)."""

    label: str
    factor: str | None
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _freeze(dict(self.values)))

    @property
    def level(self) -> Any:
        """The level of `factor` at this point (None for the base point)."""
        return self.values.get(self.factor) if self.factor else None

    def param(self) -> dict[str, Any]:
        """This point as the `design_point` trial param: {"label", "factor", "level"}, JSON-able."""
        return {"label": self.label, "factor": self.factor, "level": _jsonable(self.level)}


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

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise SpaceError(f"{self.path.name}: design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if self.mode not in ("max", "min"):
            raise SpaceError(f"{self.path.name}: mode must be max or min, got {self.mode!r}")
        if tuple(self.budgets) != BUDGETS:
            raise SpaceError(f"{self.path.name}: budgets must be {', '.join(BUDGETS)}, in that order")
        if not self.seeds:
            raise SpaceError(f"{self.path.name}: seeds must not be empty")
        object.__setattr__(self, "base", _freeze(dict(self.base)))
        object.__setattr__(self, "factors", tuple(self.factors))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "budgets", _FrozenDict(self.budgets))

    def points(self) -> list[DesignPoint]:
        """The design points. one_at_a_time: the base point, then one point per non-baseline level of
        each factor. grid: the full factorial, labelled "k1=v1,k2=v2". sample: raises SpaceError."""
        return [point for _, point in self._design()]

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
            _apply(config, name, value)
        config["seed"] = seed
        return _jsonable(config)

    def max_epochs(self, budget: str) -> int:
        """The most epochs any trial of `budget` runs (ASHA's max_t)."""
        epochs = [self.config(budget).get("epochs", _TRAIN_DEFAULTS["epochs"])]
        for factor in self.factors:
            if "epochs" not in factor.keys:
                continue
            kind, values = _values(factor)
            if kind in ("levels", "choice"):
                epochs += [v.get("epochs") if factor.multi_key else v for v in values]
            else:
                epochs.append(values[1] - 1 if kind == "randint" else values[1])
        return int(max(e for e in epochs if isinstance(e, numbers.Real)))

    def _design(self) -> Iterator[tuple[str, DesignPoint]]:
        """(key path of the levels it uses, point) for every design point, base point first."""
        if self.design == "sample":
            raise SpaceError(f"{self.path.name}: design sample has no fixed points; its factors are drawn "
                             f"from distributions (tune/ samples them)")
        if self.design == "one_at_a_time":
            yield "base", DesignPoint("base", None, {})
            for factor in self.factors:
                for i, level in enumerate(factor.levels[1:], start=1):
                    yield (f"factors.{factor.name}.levels[{i}]",
                           DesignPoint(_label(factor.name, level), factor.name, {factor.name: level}))
            return
        indexed = [list(enumerate(f.levels)) for f in self.factors]
        for combo in itertools.product(*indexed):
            values = {f.name: level for f, (_, level) in zip(self.factors, combo)}
            where = " + ".join(f"factors.{f.name}.levels[{i}]" for f, (i, _) in zip(self.factors, combo))
            label = ",".join(_label(name, level) for name, level in values.items()) or "base"
            yield where or "base", DesignPoint(label, None, values)


def _label(name: str, level: Any) -> str:
    if _is_multi_key(name, level):
        return ",".join(f"{k}={_fmt(v)}" for k, v in level.items())
    return f"{name}={_fmt(level)}"


# ----------------------------------------------------------------------------------- trial params
def trial_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """The flat TrainConfig dict of a Tune trial, from its params as `tune/` builds them.

    params = the budget-resolved base (TrainConfig keys) + `seed`, plus either factor keys directly
    (grid, sample; a multi-key factor's value is a mapping of TrainConfig keys) or, for one_at_a_time,
    "design_point": {"label", "factor", "level"}, whose level overrides the base. Needs no YAML file.
    """
    if not isinstance(params, Mapping):
        raise SpaceError(f"trial params must be a mapping, got {type(params).__name__}")
    config: dict[str, Any] = {}
    multi: list[tuple[str, Mapping]] = []
    for key, value in params.items():
        if key == DESIGN_POINT_KEY:
            continue
        if key in TRAIN_KEYS:
            config[key] = value
        elif isinstance(value, Mapping):
            multi.append((key, value))  # applied after the plain keys: a factor overrides the base
        else:
            raise SpaceError(f"trial params: unknown key {key!r}; expected TrainConfig keys, {DESIGN_POINT_KEY} "
                             f"or a multi-key factor (a mapping of TrainConfig keys)")
    for key, value in multi:
        _apply(config, key, value)
    if DESIGN_POINT_KEY in params:
        point = params[DESIGN_POINT_KEY]
        if not isinstance(point, Mapping) or "factor" not in point or "level" not in point:
            raise SpaceError(f"trial params: {DESIGN_POINT_KEY} must be a mapping with keys label, factor, level; "
                             f"got {point!r}")
        factor = point["factor"]
        if factor is not None:
            if factor not in TRAIN_KEYS and not isinstance(point["level"], Mapping):
                raise SpaceError(f"trial params: {DESIGN_POINT_KEY}: factor {factor!r} is not a TrainConfig key "
                                 f"and its level is not a mapping of TrainConfig keys")
            _apply(config, factor, point["level"])
    return _jsonable(config)


# ---------------------------------------------------------------------------------------- loading
def list_spaces() -> list[str]:
    """Names of the search spaces shipped with cnnsearch, sorted."""
    return sorted(p.stem for p in _SHIPPED_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path, *, check_budgets: Iterable[str] = BUDGETS) -> SearchSpace:
    """A shipped space by name ("ablation") or a user's YAML file by path, fully validated: every
    design point's config at every budget passes `TrainConfig.from_dict`. Raises SpaceError.

    `check_budgets` limits the TrainConfig checks (one meta-device model build per distinct network,
    most of the load time) to the budgets named, e.g. the one a runner is about to run; every other
    check still covers all budgets.
    """
    check_budgets = (check_budgets,) if isinstance(check_budgets, str) else tuple(check_budgets)
    unknown = [b for b in check_budgets if b not in BUDGETS]
    if unknown:
        raise SpaceError(f"unknown budget {unknown[0]!r}; budgets are: {', '.join(BUDGETS)}")
    path = _locate(name_or_path)
    return _Loader(path, check_budgets).load()


def _locate(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text in list_spaces() and not isinstance(name_or_path, Path):
        return _SHIPPED_DIR / f"{text}.yaml"
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or "\\" in text or path.exists():
        if not path.is_file():
            raise SpaceError(f"{path.name}: no such file ({text})")
        return path
    raise SpaceError(f"unknown search space {text!r}; shipped spaces: {', '.join(list_spaces())} "
                     f"(or give the path of a .yaml file)")


class _Loader:
    """Parses and validates one YAML file; every error names the file and the key path."""

    def __init__(self, path: Path, check_budgets: tuple[str, ...] = BUDGETS) -> None:
        self.path = path
        self.file = path.name
        self.check_budgets = [b for b in BUDGETS if b in check_budgets]  # in BUDGETS order

    def fail(self, where: str | None, message: str) -> NoReturn:
        _fail(self.file, where, message)

    # -- reading ---------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            self.fail(None, f"cannot read the file: {getattr(err, 'strerror', None) or err}")
        try:
            raw = load_yaml(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
            problem = getattr(err, "problem", None) or str(err)
            self.fail(where, f"YAML syntax error: {problem}")
        if not isinstance(raw, dict):
            self.fail(None, f"must be a mapping with keys {', '.join(TOP_KEYS)}; got "
                            f"{'an empty file' if raw is None else type(raw).__name__}")
        return raw

    def load(self) -> SearchSpace:
        raw = self.read()
        unknown = [k for k in raw if k not in TOP_KEYS]
        if unknown:
            self.fail(None, f"unknown top-level key {unknown[0]!r}; allowed keys are: {', '.join(TOP_KEYS)}")
        required = ("description", "base", "factors", "design", "seeds", "budgets")
        for key in required:
            if key not in raw:
                self.fail(None, f"missing key {key!r} (required: {', '.join(required)})")
        description, source = self.text("description", raw), self.text("source", raw, default="")
        design = raw["design"]
        if design not in DESIGNS:
            self.fail("design", f"must be one of {', '.join(DESIGNS)}, got {design!r}")
        base = self.config_keys("base", raw["base"])
        factors = self.factors(raw["factors"], design, base)
        num_samples, seeds = self.num_samples(raw, design), self.seeds(raw["seeds"])
        metric = raw.get("metric", "val_acc")
        if not isinstance(metric, str) or metric not in METRICS:
            self.fail("metric", f"must be one of {', '.join(METRICS)}, got {metric!r}")
        mode = raw.get("mode", METRICS[metric])
        if mode not in ("max", "min"):
            self.fail("mode", f"must be max or min, got {mode!r}")
        space = SearchSpace(
            name=self.path.stem, path=self.path.resolve(), description=description, source=source, base=base,
            factors=factors, design=design, num_samples=num_samples, seeds=seeds, metric=metric, mode=mode,
            budgets=self.budgets(raw["budgets"], base),
        )
        self.check_configs(space)
        return space

    def text(self, key: str, raw: dict, default: str | None = None) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or (default is None and not value.strip()):
            self.fail(key, f"must be a {'non-empty ' if default is None else ''}string, got {value!r}")
        return value

    def config_keys(self, where: str, values: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """A mapping of TrainConfig keys (plus `extra`), frozen; `seed` is never one (see `seeds`)."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            self.fail(where, f"must be a mapping of TrainConfig keys, got {type(values).__name__}")
        for key in values:
            if key == "seed":
                self.fail(f"{where}.seed", "seed is not set here; list the repeats under the top-level `seeds` key")
            if key not in TRAIN_KEYS and key not in extra:
                allowed = f"TrainConfig keys are: {_KEY_LIST}" + (f"; also {', '.join(extra)}" if extra else "")
                self.fail(where, f"unknown key {key!r}; {allowed}")
        return {k: _freeze(v) for k, v in values.items()}

    def num_samples(self, raw: dict, design: str) -> int:
        if "num_samples" not in raw:
            return DEFAULT_NUM_SAMPLES
        if design != "sample":
            self.fail("num_samples", f"applies to design sample only (this space's design is {design})")
        value = raw["num_samples"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail("num_samples", f"must be an integer >= 1, got {value!r}")
        return value

    def seeds(self, value: Any) -> tuple[int, ...]:
        expected = "must be a non-empty list of distinct integers >= 0, or a count n >= 1 (meaning 0..n-1)"
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                self.fail("seeds", f"{expected}, got {value!r}")
            return tuple(range(value))
        if not isinstance(value, list) or not value:
            self.fail("seeds", f"{expected}, got {value!r}")
        for i, seed in enumerate(value):
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                self.fail(f"seeds[{i}]", f"{expected}, got {seed!r}")
            if seed in value[:i]:
                self.fail(f"seeds[{i}]", f"duplicate seed {seed}")
        return tuple(value)

    # -- factors ---------------------------------------------------------------------------------
    def factors(self, raw: Any, design: str, base: dict[str, Any]) -> tuple[Factor, ...]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail("factors", f"must be a mapping of factor name -> {{levels: [...]}} or a distribution, "
                                 f"got {type(raw).__name__}")
        factors = tuple(self.factor(name, spec, design, base) for name, spec in raw.items())
        owner: dict[str, str] = {}
        for factor in factors:
            for key in factor.keys:
                if key in owner:
                    self.fail(f"factors.{factor.name}", f"sets {key}, which factors.{owner[key]} also sets; "
                                                        f"a key can belong to one factor only")
                owner[key] = factor.name
        return factors

    def factor(self, name: Any, spec: Any, design: str, base: dict[str, Any]) -> Factor:
        where = f"factors.{name}"
        if name == "seed":
            self.fail(where, "seed is not a factor; list the repeats under the top-level `seeds` key")
        listed = [spec.get(k) for k in ("levels", "choice")] if isinstance(spec, dict) else []
        multi = name not in TRAIN_KEYS and any(isinstance(v, dict) for vs in listed if isinstance(vs, list) for v in vs)
        if name not in TRAIN_KEYS and not multi:
            self.fail("factors", f"unknown key {name!r}; TrainConfig keys are: {_KEY_LIST} (or name a factor "
                                 f"freely when its levels are mappings of TrainConfig keys)")
        if not isinstance(spec, dict):
            self.fail(where, f"must be a mapping with `levels` or one distribution ({', '.join(DISTRIBUTIONS)}), "
                             f"e.g. {{levels: [a, b]}}; got {spec!r}")
        unknown = [k for k in spec if k not in ("levels", *DISTRIBUTIONS)]
        if unknown:
            self.fail(where, f"unknown key {unknown[0]!r}; give levels or one of {', '.join(DISTRIBUTIONS)}")
        if len(spec) != 1:
            self.fail(where, f"give exactly one of levels, {', '.join(DISTRIBUTIONS)}; "
                             f"got {' and '.join(spec) if spec else 'none'}")
        kind, values = next(iter(spec.items()))
        if kind not in ("levels", "choice"):
            if multi:
                self.fail(f"{where}.{kind}", "a multi-key factor takes levels or choice, not a numeric distribution")
            self.bounds(f"{where}.{kind}", kind, values)
        elif not isinstance(values, list) or not values:
            self.fail(f"{where}.{kind}", f"must be a non-empty list, got {values!r}")
        else:
            for i, value in enumerate(values):
                if multi and not isinstance(value, dict):
                    self.fail(f"{where}.{kind}[{i}]", f"every level of a multi-key factor must be a mapping of "
                                                      f"TrainConfig keys, got {value!r}")
                if multi:
                    if not value:
                        self.fail(f"{where}.{kind}[{i}]", "must set at least one TrainConfig key")
                    self.config_keys(f"{where}.{kind}[{i}]", value)
                elif isinstance(value, dict):
                    self.fail(f"{where}.{kind}[{i}]", "a mapping sets several keys, so name this factor with a "
                                                      "word that is not a TrainConfig key (e.g. recipe)")
                for j in range(i):
                    if _canon(values[j]) == _canon(value):
                        self.fail(f"{where}.{kind}[{i}]", f"duplicate of {kind}[{j}] ({_fmt(value)})")
        if kind != "levels" and design != "sample":
            self.fail(f"{where}.{kind}", f"distributions need design: sample (this space's design is {design}); "
                                         f"use levels: [...]")
        if kind == "levels" and design == "one_at_a_time":
            self.check_baseline(where, name, values[0], base)
        if kind == "levels":
            return Factor(name, levels=tuple(values))
        return Factor(name, distribution=(kind, tuple(values)))

    def bounds(self, where: str, kind: str, values: Any) -> None:
        if not isinstance(values, list) or len(values) != 2:
            self.fail(where, f"must be [low, high], got {values!r}")
        integral = kind == "randint"
        for i, bound in enumerate(values):
            ok = isinstance(bound, int) if integral else isinstance(bound, (int, float))
            if isinstance(bound, bool) or not ok or not math.isfinite(bound):
                self.fail(f"{where}[{i}]", f"must be {'an integer' if integral else 'a finite number'}, got {bound!r}")
        low, high = values
        if low >= high:
            self.fail(where, f"needs low < high{' (high is exclusive)' if integral else ''}, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            self.fail(where, f"needs low > 0 (a log scale), got [{low}, {high}]")

    def check_baseline(self, where: str, name: str, first: Any, base: dict[str, Any]) -> None:
        """one_at_a_time: the first level is the baseline, so it must be what `base` sets."""
        settings = first.items() if isinstance(first, dict) else [(name, first)]
        for key, value in settings:
            if key not in base:
                self.fail(f"{where}.levels[0]", f"one_at_a_time varies one factor from the baseline, so base "
                                                f"must set {key} (to the first level, {_fmt(value)})")
            if _canon(base[key]) != _canon(value):
                self.fail(f"{where}.levels[0]", f"the first level is the baseline and must equal base's "
                                                f"{key}={_fmt(base[key])}, got {_fmt(value)}")

    # -- budgets ---------------------------------------------------------------------------------
    def budgets(self, raw: Any, base: dict[str, Any]) -> dict[str, Budget]:
        if not isinstance(raw, dict):
            self.fail("budgets", f"must be a mapping with {', '.join(BUDGETS)}, got {type(raw).__name__}")
        for name in raw:
            if name not in BUDGETS:
                self.fail("budgets", f"unknown budget {name!r}; budgets are: {', '.join(BUDGETS)}")
        for name in BUDGETS:
            if name not in raw:
                self.fail("budgets", f"missing budget {name!r}; every space defines {', '.join(BUDGETS)}")
        budgets = {}
        for name in BUDGETS:
            where = f"budgets.{name}"
            values = self.config_keys(where, raw[name], extra=ASHA_KEYS)
            asha = {k: values.pop(k) for k in ASHA_KEYS if k in values}
            for key, least in (("grace_period", 1), ("reduction_factor", 2)):
                value = asha.get(key, least)
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    self.fail(f"{where}.{key}", f"must be an integer >= {least}, got {value!r}")
            budgets[name] = Budget(name, values, **asha)
            epochs = {**base, **values}.get("epochs", _TRAIN_DEFAULTS["epochs"])
            grace = budgets[name].grace_period
            if isinstance(epochs, int) and grace > epochs:
                self.fail(f"{where}.grace_period", f"must be <= the budget's epochs ({epochs}), got {grace}")
        return budgets

    # -- every trial's config --------------------------------------------------------------------
    def check_configs(self, space: SearchSpace) -> None:
        """Every config a trial can get must pass TrainConfig.from_dict, before Ray starts."""
        self.check("base", dict(space.base))
        for budget in self.check_budgets:
            self.check(f"budgets.{budget}", space.config(budget, seed=space.seeds[0]))
        if space.design == "sample":
            self.check_sampled(space)
            return
        for budget in self.check_budgets:
            for where, point in space._design():
                if point.values:
                    context = f"point {point.label}, budget {budget}"
                    self.check(where, space.config(budget, point, seed=space.seeds[0]), context)

    def check_sampled(self, space: SearchSpace) -> None:
        """Each choice and each bound of a numeric distribution, with the other factors' keys left at
        the model's defaults. A value fails only if it fails with every model the space can draw:
        combinations (e.g. a model that does not take a sampled option) surface at trial start."""
        factor_keys = {k for f in space.factors for k in f.keys}
        model_factor = next((f for f in space.factors if "model" in f.keys), None)
        for budget in self.check_budgets:
            start = {k: v for k, v in space.config(budget, seed=space.seeds[0]).items() if k not in factor_keys}
            models = [start.get("model", _TRAIN_DEFAULTS["model"])]
            if model_factor is not None and not model_factor.multi_key:
                models = list(_values(model_factor)[1])
            for factor in space.factors:
                kind, values = _values(factor)
                numeric = kind in ("uniform", "loguniform", "randint")
                for i, value in enumerate(values):
                    if kind == "randint" and i == 1:
                        value -= 1  # high is exclusive: the largest draw is high - 1
                    elif numeric:
                        value = float(value)  # uniform draws floats, even between integer bounds
                    candidates = [None] if factor is model_factor else models
                    errors = []
                    for model in candidates:
                        config = dict(start) if model is None else {**start, "model": model}
                        _apply(config, factor.name, value)
                        error = _check(config)
                        if error is None:
                            break
                        errors.append(error)
                    else:
                        self.fail(f"factors.{factor.name}.{kind}[{i}]", f"{errors[0]} (budget {budget})")

    def check(self, where: str, config: dict[str, Any], context: str | None = None) -> None:
        error = _check(config)
        if error is not None:
            self.fail(where, f"{error}" + (f" ({context})" if context else ""))


def _values(factor: Factor) -> tuple[str, tuple]:
    """(kind, values) to check: levels and choices as they are; [low, high] of numeric distributions."""
    if factor.levels is not None:
        return "levels", factor.levels
    return factor.distribution


def _check(config: Mapping[str, Any]) -> str | None:
    """TrainConfig.from_dict's complaint about `config`, or None if it passes.

    A full check builds the model on the meta device (30-200 ms; most of a space's load time), so it
    is done as two cached checks that together say what the full one would: the training keys with
    the cheapest model (basecnn, no options: it cannot fail there), then the model part (name,
    options, data set) alone, with options equal to the family's defaults dropped, so that configs
    building the same network share one build.
    """
    config = {k: v for k, v in _jsonable(config).items() if k != "seed"}  # seeds are checked on their own
    training = {k: v for k, v in config.items() if k not in _MODEL_KEYS} | {"model": _CHEAP_MODEL}
    model = {k: v for k, v in config.items() if k in _MODEL_KEYS or k == "dataset"}
    name = model.get("model", _TRAIN_DEFAULTS["model"])
    if isinstance(name, str) and name in list_models():
        defaults = model_options(name)
        model = {k: v for k, v in model.items()
                 if not (v is None or (k in defaults and _canon(v) == _canon(_jsonable(defaults[k]))))}
    return _check_one(training) or _check_one(model)


def _check_one(config: dict[str, Any]) -> str | None:
    try:
        key = json.dumps(config, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # not JSON (a YAML date, a NaN): check it as it is, uncached
        return _check_uncached(config)
    return _check_cached(key)


@lru_cache(maxsize=4096)
def _check_cached(key: str) -> str | None:
    return _check_uncached(json.loads(key))


def _check_uncached(config: dict[str, Any]) -> str | None:
    try:
        TrainConfig.from_dict(config)
    except (ValueError, TypeError, AttributeError) as err:  # a bad user value, whatever its type
        return str(err)
    return None
