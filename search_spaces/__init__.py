"""Search spaces: what a study varies, its design and its budgets, as validated YAML files; and the
contracts `tune/` and `analysis/` share through this package: trial params, the experiment record,
levels and factors, and the schedulers.

    space.py       Factor, Budget, DesignPoint, SearchSpace: the design and each trial's config
    loader.py      load_space, list_spaces: a YAML file (or a shipped name), validated before Ray starts
    params.py      trial_config: a Tune trial's params back to a flat TrainConfig dict
    levels.py      level_key, level_label, jsonable: one form of a level for every package
    schedulers.py  SCHEDULERS and their budget SETTINGS (Ray-free: tune/ passes Ray in to build them)
    record.py      ExperimentRecord (cnnsearch.json), the file names, METRICS and their direction

Ray-free; see README.md here.
"""
from __future__ import annotations

from .levels import jsonable, level_key, level_label
from .loader import MAX_TRIALS, list_spaces, load_space
from .params import DESIGN_POINT_KEY, trial_config
from .record import CHECKPOINT_FILE, METRICS, STATE_FILE, ExperimentRecord, Provenance, RecordError, locate_folder
from .schedulers import DEFAULT_SCHEDULER, SCHEDULERS, SETTINGS, Scheduler, scheduler
from .space import BUDGETS, DESIGNS, DISTRIBUTIONS, TRAIN_KEYS, Budget, DesignPoint, Factor, SearchSpace, SpaceError

__all__ = [
    "BUDGETS", "DESIGNS", "DISTRIBUTIONS", "TRAIN_KEYS", "Budget", "DesignPoint", "Factor", "SearchSpace", "SpaceError",
    "MAX_TRIALS", "list_spaces", "load_space", "DESIGN_POINT_KEY", "trial_config", "jsonable", "level_key", "level_label",
    "DEFAULT_SCHEDULER", "SCHEDULERS", "SETTINGS", "Scheduler", "scheduler",
    "CHECKPOINT_FILE", "METRICS", "STATE_FILE", "ExperimentRecord", "Provenance", "RecordError", "locate_folder",
]
