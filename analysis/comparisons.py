"""Effects of factor levels at equal budget.

ASHA stops weak trials early, so a trial's last metric depends on how long it was allowed to run:
comparing last metrics flatters the levels ASHA kept. Every comparison here is made at one epoch that
every trial in it reached: for two levels, the largest epoch both groups reached.

Groups: in a one-at-a-time design, a level's trials are the points on that factor's axis (the base
point for the baseline level); in grid and sampled designs, every trial at that level (a marginal mean,
over the grid's other factors as cells; sampled trials as one pool).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from search_spaces import level_key

from .load import Experiment
from .stats import CONFIDENCE, N_RESAMPLES, SEED, Estimate, bootstrap_diff, bootstrap_mean, group_mean

__all__ = ["Comparison", "compare", "level_effects", "effects", "group_trials", "values_at_epoch", "common_epoch"]


@dataclass(frozen=True)
class Comparison:
    """Level `a` against level `b` of `factor` at `epoch`: `diff` = mean(a) - mean(b) in the metric's
    units, with its bootstrap interval. `better` is +1 when a is better than b with the interval
    excluding zero (for the metric's mode), -1 when b is, 0 when the data cannot tell."""

    factor: str
    a: str
    b: str
    metric: str
    mode: str  # "max" or "min": which direction is better
    epoch: int | None
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: Estimate

    @property
    def better(self) -> int:
        sign = self.diff.sign()
        return sign if self.mode == "max" else -sign


def group_trials(experiment: Experiment, factor: str, level: Any, *, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The trials that represent `level` of `factor` (a level value or its key), restricted to the
    trials whose other factors take the levels in `where`."""
    trials = experiment.trials
    key = level if isinstance(level, str) else level_key(level)
    mask = trials[factor].astype(str) == key
    if experiment.design == "one_at_a_time":
        on_axis = trials["design_factor"].isna() | (trials["design_factor"] == factor)
        mask &= on_axis
    for name, value in (where or {}).items():
        mask &= trials[name].astype(str) == (value if isinstance(value, str) else level_key(value))
    return trials[mask]


def _cell_columns(experiment: Experiment, factor: str) -> list[str]:
    """Grid designs: the other level factors, whose combinations are the cells of a marginal mean."""
    if experiment.design != "grid":
        return []
    return [f.name for f in experiment.factors if f.name != factor and not f.continuous]


def _reach(trials: pd.DataFrame) -> pd.Series:
    """How far each trial counts as having run: a diverged trial ran its course (its last values
    stand for the epochs it never reached), any other one its epochs trained."""
    return trials["epochs"].where(trials["status"] != "diverged", trials["max_epochs"])


def values_at_epoch(experiment: Experiment, trials: pd.DataFrame, epoch: int, metric: str | None = None) -> pd.Series:
    """The metric of each trial at `epoch` (a diverged trial's last value after it diverged), by trial_id."""
    metric = metric or experiment.metric
    rows = experiment.epochs[experiment.epochs["trial_id"].isin(trials["trial_id"]) &
                             (experiment.epochs["epoch"] <= epoch)]
    last = rows.sort_values("epoch").drop_duplicates("trial_id", keep="last").set_index("trial_id")[metric]
    return last.reindex(trials["trial_id"]).astype(float)


def common_epoch(*groups: pd.DataFrame) -> int | None:
    """The largest epoch every trial of `groups` reached (a diverged trial counts as finished)."""
    reach = pd.concat([_reach(g) for g in groups if len(g)])
    return int(reach.min()) if len(reach) else None


def _cells(experiment: Experiment, group: pd.DataFrame, factor: str, epoch: int, metric: str) -> tuple[list[np.ndarray], int]:
    """The group's values at `epoch` as cells (one per combination of a grid's other factors) and
    how many trials have a value."""
    values = values_at_epoch(experiment, group, epoch, metric)
    columns = _cell_columns(experiment, factor)
    array = values.to_numpy()
    n = int(values.notna().sum())
    if not columns:
        return [array], n
    keys = group[columns].astype(str).agg("|".join, axis=1).to_numpy()
    return [array[keys == k] for k in dict.fromkeys(keys)], n


def compare(experiment: Experiment, factor: str, a: Any, b: Any, *, where: Mapping[str, Any] | None = None,
            metric: str | None = None, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
            seed: int = SEED) -> Comparison:
    """Level `a` against level `b` of `factor` at the largest epoch every trial of both reached."""
    metric = metric or experiment.metric
    mode = experiment.record.mode_of(metric)
    group_a = group_trials(experiment, factor, a, where=where)
    group_b = group_trials(experiment, factor, b, where=where)
    key_a, key_b = (x if isinstance(x, str) else level_key(x) for x in (a, b))
    epoch = common_epoch(group_a, group_b)
    if epoch is None or not len(group_a) or not len(group_b):
        return Comparison(factor, key_a, key_b, metric, mode, epoch, len(group_a), len(group_b), math.nan, math.nan,
                          Estimate(math.nan, math.nan, math.nan))
    cells_a, n_a = _cells(experiment, group_a, factor, epoch, metric)
    cells_b, n_b = _cells(experiment, group_b, factor, epoch, metric)
    diff = bootstrap_diff(cells_a, cells_b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Comparison(factor, key_a, key_b, metric, mode, epoch, n_a, n_b, group_mean(cells_a), group_mean(cells_b), diff)


def level_effects(experiment: Experiment, factor: str, *, metric: str | None = None, n_resamples: int = N_RESAMPLES,
                  confidence: float = CONFIDENCE, seed: int = SEED) -> pd.DataFrame:
    """One row per level of `factor` present in the trials: its mean with a bootstrap interval, and its
    difference to the reference level (the baseline, i.e. the space's first level) with an interval.

    one_at_a_time: each level against the base point at the largest epoch both reached (epochs may
    differ between rows). grid and sample: marginal means, every level at the one epoch all reached.
    `rank` 1 is the best level (one at a time: by the difference to the base; otherwise by the mean).
    """
    metric = metric or experiment.metric
    spec = experiment.factor(factor)
    if spec is None:
        raise KeyError(f"{factor!r} is not a factor of this experiment; factors: "
                       f"{', '.join(f.name for f in experiment.factors)}")
    groups = {lv: group_trials(experiment, factor, lv) for lv in spec.by_key()}
    groups = {lv: g for lv, g in groups.items() if len(g)}
    if not groups:
        return pd.DataFrame(columns=LEVEL_COLUMNS)
    reference = next(iter(groups))
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    shared = common_epoch(*groups.values()) if experiment.design != "one_at_a_time" else None
    rows = []
    for level, group in groups.items():
        epoch = shared if shared is not None else common_epoch(group, groups[reference])
        cells, n = _cells(experiment, group, factor, epoch, metric)
        ref_cells, _ = _cells(experiment, groups[reference], factor, epoch, metric)
        mean = bootstrap_mean(cells, **boot)
        diff = Estimate(0.0, math.nan, math.nan) if level == reference else bootstrap_diff(cells, ref_cells, **boot)
        rows.append({"factor": factor, "level": level, "reference": reference, "epoch": epoch, "n": n,
                     "mean": mean.value, "mean_low": mean.low, "mean_high": mean.high,
                     "reference_mean": group_mean(ref_cells), "diff": diff.value, "diff_low": diff.low,
                     "diff_high": diff.high})
    table = pd.DataFrame(rows, columns=LEVEL_COLUMNS[:-1])
    higher = experiment.record.mode_of(metric) == "max"
    score = table["diff"] if experiment.design == "one_at_a_time" else table["mean"]
    table["rank"] = score.rank(ascending=not higher, method="min").astype("Int64")
    return table


LEVEL_COLUMNS = ["factor", "level", "reference", "epoch", "n", "mean", "mean_low", "mean_high", "reference_mean",
                 "diff", "diff_low", "diff_high", "rank"]


def effects(experiment: Experiment, *, metric: str | None = None, n_resamples: int = N_RESAMPLES,
            confidence: float = CONFIDENCE, seed: int = SEED) -> pd.DataFrame:
    """`level_effects` for every factor with levels that the trials vary, stacked."""
    tables = [level_effects(experiment, name, metric=metric, n_resamples=n_resamples, confidence=confidence, seed=seed)
              for name in experiment.varied() if not experiment.factor(name).continuous]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=LEVEL_COLUMNS)
