"""Parameter importance of a grid or sampled search with Optuna's importance evaluators (fANOVA by default),
against a permutation noise floor (`analysis.noise_floor`).

Each usable trial (see `analysis.comparisons.usable_trials`) becomes a finished Optuna trial whose value is
the metric at the last epoch every usable trial reached, so that ASHA's early stops do not pass for
unimportant parameters (under ASHA that epoch is its first rung). fANOVA's importances sum to 1 even on pure
noise; the floor says how large each factor's importance gets when the metric is shuffled over the trials.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from search_spaces import Factor

from .comparisons import common_epoch, usable_trials, values_at_epoch
from .load import Experiment
from .inference import ALPHA, holm
from .noise_floor import importance_floor

__all__ = ["parameter_importance", "importance_with_floor", "permutations_for", "PERMUTATIONS"]

# The floor is the 2nd largest of 39 permuted importances (the 95% quantile). fANOVA takes about 0.3 s per fit on
# 16 trials on one CPU core, so the floor of two factors costs about 12 s.
PERMUTATIONS = 39


def permutations_for(factors: int) -> int:
    """Enough shuffles for Holm over `factors` permutation p-values at 5%: the smallest p, 1 / (K + 1), must
    reach 0.05 / factors."""
    return max(PERMUTATIONS, 20 * factors - 1)


def _distribution(factor: Factor):
    import optuna

    if not factor.continuous:
        return optuna.distributions.CategoricalDistribution(tuple(factor.by_key()))
    kind, (low, high) = factor.distribution
    if kind == "randint":
        return optuna.distributions.IntDistribution(int(low), int(high) - 1)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=kind == "loguniform")


def _data(experiment: Experiment, metric: str) -> tuple[list[dict[str, Any]], np.ndarray, int]:
    """(params per trial, the metric per trial, the epoch) for the usable trials with a value."""
    names = experiment.varied()
    if not names:
        raise ValueError("no factor varies across the trials")
    trials = usable_trials(experiment)
    epoch = common_epoch(trials)
    if epoch is None:
        raise ValueError("no trial ended as the design meant (all crashed or unfinished)")
    values = values_at_epoch(experiment, trials, epoch, metric).to_numpy()
    specs = {n: experiment.factor(n) for n in names}
    configs = []
    for _, row in trials.iterrows():
        params = {}
        for n, spec in specs.items():
            value = row[n] if spec.continuous else str(row[n])
            params[n] = int(value) if spec.kind == "randint" else value
        configs.append(params)
    keep = np.isfinite(values)
    if keep.sum() < 2:
        raise ValueError(f"need two or more trials with a {metric} at epoch {epoch}, got {int(keep.sum())}")
    return [c for c, k in zip(configs, keep) if k], values[keep], epoch


def _evaluator(experiment: Experiment, metric: str, evaluator, seed: int):
    """importance(configs, values) -> factor -> importance, through an Optuna study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = experiment.varied()
    distributions = {n: _distribution(experiment.factor(n)) for n in names}
    direction = "maximize" if experiment.record.mode_of(metric) == "max" else "minimize"

    def importance(configs: Sequence[Mapping[str, Any]], values: np.ndarray) -> dict[str, float]:
        study = optuna.create_study(direction=direction)
        for params, value in zip(configs, values):
            study.add_trial(optuna.trial.create_trial(params=dict(params), distributions=distributions,
                                                      value=float(value)))
        chosen = evaluator if evaluator is not None else optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return dict(optuna.importance.get_param_importances(study, evaluator=chosen, params=names))

    return importance


def parameter_importance(experiment: Experiment, *, metric: str | None = None, evaluator=None,
                         seed: int = 0) -> pd.Series:
    """Importance of each varied factor (summing to 1), highest first, from `optuna.importance`.

    evaluator: an Optuna importance evaluator; default `FanovaImportanceEvaluator(seed=seed)` (needs
    scikit-learn). Raises ValueError when fewer than two trials have a value or no factor varies."""
    metric = metric or experiment.metric
    configs, values, epoch = _data(experiment, metric)
    scores = _evaluator(experiment, metric, evaluator, seed)(configs, values)
    return pd.Series(scores, name=f"importance of {metric} at epoch {epoch}", dtype=float).sort_values(ascending=False)


def importance_with_floor(experiment: Experiment, *, metric: str | None = None, evaluator=None, seed: int = 0,
                          permutations: int | None = None) -> tuple[int, pd.DataFrame]:
    """(epoch, one row per factor, highest importance first): `importance`, `floor` (the 95% quantile of its
    importances with the metric shuffled over the trials), `p` (the permutation p of its importance), `above`
    (importance > floor: a test at 5% for that factor), `p_adjusted` (Holm over the factors) and `matters`
    (p_adjusted <= 0.05: the chance that any null factor is called is at most 5%). `permutations` default:
    `permutations_for(number of factors)`. Raises as `parameter_importance`."""
    metric = metric or experiment.metric
    configs, values, epoch = _data(experiment, metric)
    importance = _evaluator(experiment, metric, evaluator, seed)
    permutations = permutations_for(len(configs[0])) if permutations is None else permutations
    floor = importance_floor(importance, configs, values, permutations=permutations, seed=seed)
    table = pd.DataFrame([f.__dict__ for f in floor], columns=["factor", "importance", "floor", "p", "above"])
    table["p_adjusted"] = holm(table["p"].to_numpy())
    table["matters"] = table["p_adjusted"] <= ALPHA
    return epoch, table
