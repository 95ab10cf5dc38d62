"""Two levels of a factor compared at equal epoch, with the design-pooled t test (`analysis.inference`).

ASHA stops weak trials early, so a trial's last metric depends on how long it was allowed to run. Each
comparison is made at one epoch: the largest that every trial of both levels reached. Its seed noise is
pooled over every design point that has values at that epoch (all of them under FIFO), which is what
makes 2-seed intervals calibrated (tests/test_calibration.py).

Only trials that ended as the design meant count: completed, diverged (its last values stand for the
epochs it never reached) or stopped by the scheduler. A crashed or unfinished trial (status error,
unfinished, or stopped without a scheduler that stops trials) is left out of every comparison and every
pool: it would otherwise pull the epoch of a comparison down to wherever it crashed.

Groups: in a one-at-a-time design a level is the point on its factor's axis (the base point for the
baseline level); in grid and sampled designs a level is every design point at that level, as cells of a
marginal mean (equal weight). A claim may name a TrainConfig key that the experiment varies through a
multi-key factor (`optimizer` in the `optimizers` space, set by `recipe`): its levels group the trials by
that key's value.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from search_spaces import level_key

from .display import scale
from .inference import ALPHA, DEFAULT_MARGIN, PairTest, compare_pair, pool_sd
from .load import Experiment

__all__ = ["usable_trials", "left_out", "level_column", "group_trials", "common_epoch", "values_at_epoch",
           "design_values", "compare", "level_effects", "effects", "LEVEL_COLUMNS"]


def usable_trials(experiment: Experiment) -> pd.DataFrame:
    """The trials that count in comparisons: completed, diverged, or stopped early by a scheduler that
    stops trials (ASHA, HyperBand)."""
    trials = experiment.trials
    done = trials["status"].isin(["completed", "diverged"])
    if experiment.record.scheduler_entry.stops_early:
        done |= trials["status"] == "stopped"
    return trials[done]


def left_out(experiment: Experiment) -> pd.DataFrame:
    """The trials left out of every comparison (crashed or unfinished)."""
    trials = experiment.trials
    return trials[~trials["trial_id"].isin(usable_trials(experiment)["trial_id"])]


def level_column(experiment: Experiment, name: str) -> tuple[str, str] | None:
    """(column of the trials table, the factor that varies it) for `name`: a factor of the experiment,
    or a TrainConfig key that a multi-key factor sets (column `config/<key>`); None otherwise."""
    if experiment.factor(name) is not None:
        return name, name
    owner = next((f for f in experiment.factors if f.multi_key and name in f.keys), None)
    if owner is not None and f"config/{name}" in experiment.trials:
        return f"config/{name}", owner.name
    return None


def _keys(column: pd.Series) -> pd.Series:
    """A column's values as level keys (factor columns hold keys already; config columns hold values)."""
    return column.map(lambda v: v if isinstance(v, str) else level_key(v))


def group_trials(experiment: Experiment, factor: str, level: Any, *, where: Mapping[str, Any] | None = None,
                 trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The trials that represent `level` (a level value or its key) of `factor` (a factor, or a key a
    multi-key factor sets), restricted to the trials whose other factors take the levels in `where`.
    `trials`: the rows to choose from (default: `usable_trials`)."""
    trials = usable_trials(experiment) if trials is None else trials
    column, owner = level_column(experiment, factor) or (factor, factor)
    mask = _keys(trials[column]) == (level if isinstance(level, str) else level_key(level))
    if experiment.design == "one_at_a_time":
        mask &= trials["design_factor"].isna() | (trials["design_factor"] == owner)
    for name, value in (where or {}).items():
        other = level_column(experiment, name)
        if other is not None:  # a where on a key the experiment does not vary was checked against its base
            mask &= _keys(trials[other[0]]) == (value if isinstance(value, str) else level_key(value))
    return trials[mask]


def _reach(trials: pd.DataFrame) -> pd.Series:
    """How far each trial counts as having run: a diverged trial ran its course (its last values stand for
    the epochs it never reached), any other one its epochs trained."""
    return trials["epochs"].where(trials["status"] != "diverged", trials["max_epochs"])


def common_epoch(*groups: pd.DataFrame) -> int | None:
    """The largest epoch every trial of `groups` reached (None when they are empty)."""
    reach = [_reach(g) for g in groups if len(g)]
    return int(pd.concat(reach).min()) if reach else None


def values_at_epoch(experiment: Experiment, trials: pd.DataFrame, epoch: int, metric: str | None = None) -> pd.Series:
    """The metric of each trial at `epoch` (a diverged trial's last value), by trial_id; NaN for a trial
    that did not reach it."""
    metric = metric or experiment.metric
    rows = experiment.epochs[experiment.epochs["trial_id"].isin(trials["trial_id"]) &
                             (experiment.epochs["epoch"] <= epoch)]
    last = rows.sort_values("epoch").drop_duplicates("trial_id", keep="last").set_index("trial_id")[metric]
    values = last.reindex(trials["trial_id"]).astype(float)
    return values.where((_reach(trials) >= epoch).to_numpy())


def design_values(experiment: Experiment, epoch: int, metric: str | None = None) -> dict[str, np.ndarray]:
    """Every design point's per-seed values at `epoch` in display units (accuracy points), from the usable
    trials that reached it: what a comparison at `epoch` pools its seed noise over."""
    metric = metric or experiment.metric
    trials = usable_trials(experiment)
    values = scale(metric) * values_at_epoch(experiment, trials, epoch, metric).to_numpy()
    labels = trials["label"].to_numpy()
    return {label: values[(labels == label) & np.isfinite(values)] for label in dict.fromkeys(labels)}


def compare(experiment: Experiment, factor: str, a: Any, b: Any, *, relation: str = ">",
            where: Mapping[str, Any] | None = None, metric: str | None = None, margin: float = DEFAULT_MARGIN,
            alpha: float = ALPHA) -> PairTest:
    """Test `a <relation> b` (levels of `factor`, relation on the metric's values: `>`, `<` or `~` within
    `margin` points) at the largest epoch every usable trial of both levels reached, in points, with the
    seed sd pooled over every design point at that epoch. The test's `a`/`b` are the levels' keys; `final`
    is False when the scheduler stopped a trial of either level (the comparison is early)."""
    metric = metric or experiment.metric
    key_a, key_b = (x if isinstance(x, str) else level_key(x) for x in (a, b))
    group_a = group_trials(experiment, factor, key_a, where=where)
    group_b = group_trials(experiment, factor, key_b, where=where)
    epoch = common_epoch(group_a, group_b)
    values = design_values(experiment, epoch, metric) if epoch is not None else {}
    pooled = pool_sd(values)
    # A level is the design points (cells) its trials ran at; an empty level is a cell without values,
    # so that compare_pair returns an undefined test that says where.
    empty = {key: np.array([]) for key, group in ((key_a, group_a), (key_b, group_b)) if not len(group)}
    cells_a = tuple(dict.fromkeys(group_a["label"])) or (key_a,)
    cells_b = tuple(dict.fromkeys(group_b["label"])) or (key_b,)
    final = not (group_a["stopped_early"].any() or group_b["stopped_early"].any())
    test = compare_pair({**values, **empty}, cells_a, relation, cells_b, pooled=pooled, margin=margin, alpha=alpha,
                        epoch=epoch, final=final)
    note = test.note.replace("no values at", "no usable trials at") if empty else test.note
    return dataclasses.replace(test, a=key_a, b=key_b, note=note)


LEVEL_COLUMNS = ["factor", "level", "reference", "epoch", "final", "n", "n_reference", "mean", "reference_mean",
                 "diff", "low", "high", "p", "sd", "df"]


def level_effects(experiment: Experiment, factor: str, *, metric: str | None = None) -> pd.DataFrame:
    """One row per level of `factor` other than the reference (the space's first level present): both
    levels' means at the epoch they are compared at (`epoch`; they differ between rows under ASHA, never
    within one), the difference in points with its 95% interval and two-sided p (design-pooled t, not
    corrected for multiplicity)."""
    metric = metric or experiment.metric
    spec = experiment.factor(factor)
    if spec is None:
        raise KeyError(f"{factor!r} is not a factor of this experiment; factors: "
                       f"{', '.join(f.name for f in experiment.factors)}")
    levels = [lv for lv in spec.by_key() if len(group_trials(experiment, factor, lv))]
    rows = []
    for level in levels[1:]:
        t = compare(experiment, factor, level, levels[0], metric=metric)
        rows.append({"factor": factor, "level": level, "reference": levels[0], "epoch": t.epoch, "final": t.final,
                     "n": t.n_a, "n_reference": t.n_b, "mean": t.mean_a, "reference_mean": t.mean_b, "diff": t.diff,
                     "low": t.low, "high": t.high, "p": t.p, "sd": t.sd, "df": t.df})
    return pd.DataFrame(rows, columns=LEVEL_COLUMNS)


def effects(experiment: Experiment, *, metric: str | None = None) -> pd.DataFrame:
    """`level_effects` for every factor with levels that the trials vary, stacked."""
    tables = [level_effects(experiment, name, metric=metric)
              for name in experiment.varied() if not experiment.factor(name).continuous]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=LEVEL_COLUMNS)
