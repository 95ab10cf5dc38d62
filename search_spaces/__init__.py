"""Search spaces: what a study varies, its design and its budgets, as validated YAML files.

Ray-free: `tune/` converts a `SearchSpace` into `ray.tune` domains, and `trial_config` turns a
trial's params back into the flat dict that `TrainConfig.from_dict` takes. See README.md here.
"""
from __future__ import annotations

from .schema import (
    BUDGETS,
    DESIGNS,
    DISTRIBUTIONS,
    METRICS,
    Budget,
    DesignPoint,
    Factor,
    SearchSpace,
    SpaceError,
    list_spaces,
    load_space,
    trial_config,
)

__all__ = [
    "BUDGETS", "DESIGNS", "DISTRIBUTIONS", "METRICS", "Budget", "DesignPoint", "Factor", "SearchSpace",
    "SpaceError", "list_spaces", "load_space", "trial_config",
]
