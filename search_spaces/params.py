"""The trial-params contract between `tune/`, `analysis/` and this package.

A trial's params are the budget-resolved base (`space.config(budget, None, seed)`) plus either the
factor keys (grid, sample; a multi-key factor's value is its mapping) or, for one_at_a_time,
`"design_point": point.param()`, i.e. {"label", "factor", "level"}. `trial_config(params)` gives back
the flat TrainConfig dict, equal to `space.config(budget, point, seed)`, without the YAML file.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .levels import jsonable
from .space import TRAIN_KEYS, SpaceError, set_factor

__all__ = ["DESIGN_POINT_KEY", "GROUP_KEYS", "trial_config", "seed_params"]

DESIGN_POINT_KEY = "design_point"  # the trial param that carries a one-at-a-time point
GROUP_KEYS = ("seeds", "group")  # what a Tune trial (a point with its seeds) adds to one seed's params


def seed_params(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A Tune trial's params, a point with its `seeds` (and its folder, `group`), as one seed's params per
    seed, in order: each what the trial of that seed alone would have (`trial_config` reads them)."""
    if not isinstance(params, Mapping):
        raise SpaceError(f"trial params must be a mapping, got {type(params).__name__}")
    seeds = params.get("seeds")
    if not isinstance(seeds, (list, tuple)) or not seeds or \
            any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise SpaceError(f"trial params: seeds must be a list of distinct whole numbers, got {seeds!r}")
    rest = {k: v for k, v in params.items() if k not in GROUP_KEYS}
    return [{**rest, "seed": seed} for seed in seeds]


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
        set_factor(config, key, value)
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
            set_factor(config, factor, point["level"])
    return jsonable(config)
