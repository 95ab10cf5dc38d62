"""Parameter importance of a sampled (or grid) search with Optuna's importance evaluators (fANOVA by default).

Each trial becomes a finished Optuna trial whose value is the metric at the one epoch every trial
reached, so that ASHA's early stops do not pass for unimportant parameters.
"""
from __future__ import annotations

import pandas as pd

from search_spaces import Factor

from .comparisons import common_epoch, values_at_epoch
from .load import Experiment

__all__ = ["parameter_importance"]


def _distribution(factor: Factor):
    import optuna

    if not factor.continuous:
        return optuna.distributions.CategoricalDistribution(tuple(factor.by_key()))
    kind, (low, high) = factor.distribution
    if kind == "randint":
        return optuna.distributions.IntDistribution(int(low), int(high) - 1)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=kind == "loguniform")


def parameter_importance(experiment: Experiment, *, metric: str | None = None, evaluator=None,
                         seed: int = 0) -> pd.Series:
    """Importance of each varied factor (summing to 1), highest first, from `optuna.importance`.

    evaluator: an Optuna importance evaluator; default `FanovaImportanceEvaluator(seed=seed)` (needs
    scikit-learn). Raises ValueError when fewer than two trials have a value or no factor varies."""
    import optuna

    metric = metric or experiment.metric
    names = experiment.varied()
    if not names:
        raise ValueError("no factor varies across the trials")
    trials = experiment.trials
    epoch = common_epoch(trials)
    values = values_at_epoch(experiment, trials, epoch, metric)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if experiment.record.mode_of(metric) == "max" else "minimize"
    study = optuna.create_study(direction=direction)
    specs = {n: experiment.factor(n) for n in names}
    distributions = {n: _distribution(specs[n]) for n in names}
    added = 0
    for (_, row), value in zip(trials.iterrows(), values):
        if pd.isna(value):
            continue
        params = {n: (row[n] if specs[n].continuous else str(row[n])) for n in names}
        params = {n: (int(v) if isinstance(distributions[n], optuna.distributions.IntDistribution) else v)
                  for n, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(value)))
        added += 1
    if added < 2:
        raise ValueError(f"need two or more trials with a {metric} at epoch {epoch}, got {added}")
    if evaluator is None:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator, params=names)
    return pd.Series(scores, name=f"importance of {metric} at epoch {epoch}", dtype=float)
