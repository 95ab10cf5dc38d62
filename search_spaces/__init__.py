"""Search spaces: what a study varies, its design and its budgets, as validated YAML files; and the
contracts `tune/` and `analysis/` share through this package: trial params, the experiment record,
levels and factors, and the schedulers.

    space.py       Factor, Budget, DesignPoint, SearchSpace: the design and each trial's config
    loader.py      load_space, list_spaces: a YAML file (or a shipped name), validated before Ray starts
    params.py      trial_config, seed_params: a Tune trial's params (a point with its seeds) back to flat TrainConfig dicts
    levels.py      level_key, level_label, jsonable: one form of a level for every package
    schedulers.py  SCHEDULERS and their budget SETTINGS (Ray-free: tune/ passes Ray in to build them)
    record.py      ExperimentRecord (cnnsearch.json), the file names, METRICS and their direction
    ledger.py      Ledger (groups.json): the runner's record of each trial's wave, seeds and end
    plan.py        Plan, Group: a space at a budget with its search and scheduler, as trials of a point and its seeds
    estimate.py    how long a plan takes, from measured speeds (speeds.json)
    modes.py       a metric's mode (max or min): mode_error, and best_of, best_index, is_better to pick by it
    seeds.py       SeedRecord: a seed's record in its trial's folder; summarize, seed_means (imports torch: not loaded here)

Ray-free; see README.md here.
"""
from __future__ import annotations

from .ledger import LEDGER_FILE, Ledger
from .levels import jsonable, level_key, level_label
from .loader import MAX_TRIALS, list_spaces, load_space
from .modes import MODES, best_index, best_of, is_better, mode_error
from .params import DESIGN_POINT_KEY, GROUP_KEYS, seed_params, trial_config
from .record import CHECKPOINT_FILE, METRICS, STATE_FILE, ExperimentRecord, Provenance, RecordError, locate_folder, put_file
from .schedulers import DEFAULT_SCHEDULER, SCHEDULERS, SETTINGS, Scheduler, scheduler
from .space import BUDGETS, DESIGNS, DISTRIBUTIONS, TRAIN_KEYS, Budget, DesignPoint, Factor, SearchSpace, SpaceError

__all__ = [
    "BUDGETS", "DESIGNS", "DISTRIBUTIONS", "TRAIN_KEYS", "Budget", "DesignPoint", "Factor", "SearchSpace", "SpaceError",
    "MAX_TRIALS", "list_spaces", "load_space", "DESIGN_POINT_KEY", "GROUP_KEYS", "seed_params", "trial_config", "jsonable", "level_key", "level_label",
    "DEFAULT_SCHEDULER", "SCHEDULERS", "SETTINGS", "Scheduler", "scheduler",
    "MODES", "best_index", "best_of", "is_better", "mode_error",
    "CHECKPOINT_FILE", "METRICS", "STATE_FILE", "ExperimentRecord", "Provenance", "RecordError", "locate_folder", "put_file",
    "LEDGER_FILE", "Ledger",
]
