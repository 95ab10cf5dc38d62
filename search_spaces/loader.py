"""Loading a search space: a shipped name or a YAML file, parsed and fully validated before Ray starts.

Every error is a one-line SpaceError naming the file and the key path, e.g.
`my.yaml: factors.stem_kernel.levels[1]: resnet18: stem_kernel must be 3 or 7, got 5 (point stem_kernel=5,
budget smoke)`: every config a trial can get, at every budget, must pass `TrainConfig.from_dict`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from cnnsearch.config import TrainConfig
from cnnsearch.yamlio import load_yaml

from .levels import freeze, level_key, level_label
from .modes import mode_error
from .record import METRICS
from .schedulers import DEFAULT_SCHEDULER, SCHEDULERS, SETTINGS
from .space import (
    BUDGETS,
    DESIGNS,
    DISTRIBUTIONS,
    TRAIN_DEFAULTS,
    TRAIN_KEYS,
    Budget,
    Factor,
    SearchSpace,
    SpaceError,
    set_factor,
)

__all__ = ["list_spaces", "load_space"]

TOP_KEYS = ("description", "source", "base", "factors", "design", "num_samples", "seeds", "base_seeds", "metric",
            "mode", "scheduler", "budgets")
DEFAULT_NUM_SAMPLES = 20
# The most trials a space may define (design points x seeds, or draws): every fixed design point is
# checked at every budget when the space loads (about 1 ms each), and a grid is counted before that,
# so a factorial of a million points is refused at once instead of hanging.
MAX_TRIALS = 10_000

_KEY_LIST = ", ".join(sorted(k for k in TRAIN_KEYS if k != "seed"))
_SHIPPED_DIR = Path(__file__).resolve().parent


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
        text = f"{self.file}: {where}: {message}" if where else f"{self.file}: {message}"
        raise SpaceError(" ".join(text.split()))  # one line, whatever the wrapped error looked like

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
        base_seeds = self.seeds(raw["base_seeds"], "base_seeds") if raw.get("base_seeds") is not None else None
        metric = raw.get("metric", "val_acc")
        if not isinstance(metric, str) or metric not in METRICS:
            self.fail("metric", f"must be one of {', '.join(METRICS)}, got {metric!r}")
        mode = raw.get("mode", METRICS[metric])
        if (error := mode_error(mode)) is not None:
            self.fail("mode", error)
        scheduler = raw.get("scheduler", DEFAULT_SCHEDULER)
        if scheduler not in SCHEDULERS:
            self.fail("scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        space = SearchSpace(
            name=self.path.stem, path=self.path.resolve(), description=description, source=source, base=base,
            factors=factors, design=design, num_samples=num_samples, seeds=seeds, metric=metric, mode=mode,
            budgets=self.budgets(raw["budgets"], base), scheduler=scheduler, base_seeds=base_seeds,
        )
        self.check_size(space)
        self.check_configs(space)
        return space

    def check_size(self, space: SearchSpace) -> None:
        if space.design == "sample":
            if space.num_samples > MAX_TRIALS:
                self.fail("num_samples", f"{space.num_samples:,} draws; at most {MAX_TRIALS:,}")
            return
        budget = max(space.budgets, key=space.num_trials)  # a budget may run more seeds
        trials, seeds = space.num_trials(budget), len(space.seeds_for(budget))
        if trials > MAX_TRIALS:
            shape = " x ".join(str(len(f.levels)) for f in space.factors) if space.design == "grid" else None
            self.fail("factors", f"{space.num_points:,} design points{f' ({shape} levels)' if shape else ''} x "
                                 f"{seeds} seed(s) = {trials:,} trials; at most {MAX_TRIALS:,}: "
                                 "split the study, or use design: sample")

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
        return {k: freeze(v) for k, v in values.items()}

    def num_samples(self, raw: dict, design: str) -> int:
        if "num_samples" not in raw:
            return DEFAULT_NUM_SAMPLES
        if design != "sample":
            self.fail("num_samples", f"applies to design sample only (this space's design is {design})")
        value = raw["num_samples"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail("num_samples", f"must be an integer >= 1, got {value!r}")
        return value

    def seeds(self, value: Any, where: str = "seeds") -> tuple[int, ...]:
        expected = "must be a non-empty list of distinct integers >= 0, or a count n >= 1 (meaning 0..n-1)"
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                self.fail(where, f"{expected}, got {value!r}")
            return tuple(range(value))
        if not isinstance(value, list) or not value:
            self.fail(where, f"{expected}, got {value!r}")
        for i, seed in enumerate(value):
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                self.fail(f"{where}[{i}]", f"{expected}, got {seed!r}")
            if seed in value[:i]:
                self.fail(f"{where}[{i}]", f"duplicate seed {seed}")
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
                    if level_key(values[j]) == level_key(value):
                        self.fail(f"{where}.{kind}[{i}]", f"duplicate of {kind}[{j}] ({level_label(value)})")
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
                                                f"must set {key} (to the first level, {level_label(value)})")
            if level_key(base[key]) != level_key(value):
                self.fail(f"{where}.levels[0]", f"the first level is the baseline and must equal base's "
                                                f"{key}={level_label(base[key])}, got {level_label(value)}")

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
            values = self.config_keys(where, raw[name], extra=(*SETTINGS, "seeds", "base_seeds"))
            seeds, base_seeds = (self.seeds(raw[name][key], f"{where}.{key}") if values.pop(key, None) is not None
                                 else None for key in ("seeds", "base_seeds"))
            settings = {k: values.pop(k) for k in SETTINGS if k in values}
            epochs = {**base, **values}.get("epochs", TRAIN_DEFAULTS["epochs"])
            for key, value in settings.items():
                problem = SETTINGS[key].problem(value, epochs)
                if problem:
                    self.fail(f"{where}.{key}", problem)
            budgets[name] = Budget(name, values, settings, seeds, base_seeds)
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
            for where, point in space.design_points():
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
            models = [start.get("model", TRAIN_DEFAULTS["model"])]
            if model_factor is not None and not model_factor.multi_key:
                models = list(model_factor.values)
            for factor in space.factors:
                numeric = factor.continuous
                for i, value in enumerate(factor.values):
                    if factor.kind == "randint" and i == 1:
                        value -= 1  # high is exclusive: the largest draw is high - 1
                    elif numeric:
                        value = float(value)  # uniform draws floats, even between integer bounds
                    candidates = [None] if factor is model_factor else models
                    errors = []
                    for model in candidates:
                        config = dict(start) if model is None else {**start, "model": model}
                        set_factor(config, factor.name, value)
                        error = _config_error(config)
                        if error is None:
                            break
                        errors.append(error)
                    else:
                        self.fail(f"factors.{factor.name}.{factor.kind}[{i}]", f"{errors[0]} (budget {budget})")

    def check(self, where: str, config: dict[str, Any], context: str | None = None) -> None:
        error = _config_error(config)
        if error is not None:
            self.fail(where, f"{error}" + (f" ({context})" if context else ""))


def _config_error(config: Mapping[str, Any]) -> str | None:
    """TrainConfig.from_dict's complaint about `config`, or None if it passes. Cheap after the first
    config of each network: TrainConfig builds a network on the meta device once per process."""
    try:
        TrainConfig.from_dict(config)
    except (ValueError, TypeError, AttributeError) as err:  # a bad user value, whatever its type
        return str(err)
    return None
