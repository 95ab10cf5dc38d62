"""The best trial of an experiment, evaluated once on the test split.

The model comes from the trial's checkpoint (the latest epoch it trained: Tune keeps one) or, when
there is none or `retrain` is asked for, from training its config again for its full epochs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .load import Experiment

__all__ = ["BestTrial", "best_trial", "evaluate_best", "config_changes"]


@dataclass
class BestTrial:
    """The best trial (a row of `experiment.trials`), its effective config, how its model was obtained
    and its test-split evaluation (`cnnsearch.engine.EvalResult`)."""

    trial: pd.Series
    config: dict[str, Any]
    changes: dict[str, Any]  # keys whose value differs from the experiment's base config
    model_from: str
    test: Any  # EvalResult
    classes: tuple[str, ...]


def best_trial(experiment: Experiment, *, metric: str | None = None) -> pd.Series:
    """The trial with the best value of `metric` at any epoch it trained (the space's metric and mode)."""
    metric = metric or experiment.metric
    higher = experiment.record.mode_of(metric) == "max"
    scores = experiment.trials[f"best_{metric}"].astype(float)
    if scores.isna().all():
        raise ValueError(f"no trial has a finite {metric}")
    index = scores.idxmax() if higher else scores.idxmin()
    return experiment.trials.loc[index]


def config_changes(experiment: Experiment, config: dict[str, Any]) -> dict[str, Any]:
    """The keys of `config` whose value differs from the experiment's base config (seed included)."""
    from search_spaces.space import TRAIN_DEFAULTS

    base = {**TRAIN_DEFAULTS, **experiment.record.base}
    return {k: v for k, v in config.items() if base.get(k) != v}


def evaluate_best(experiment: Experiment, *, trial_id: str | None = None, data_dir: str | None = None,
                  download: bool = True, retrain: bool = False, device: str = "auto", dataset=None) -> BestTrial:
    """Evaluate the best trial (or `trial_id`) once on the test split of its data set.

    dataset: an already loaded `cnnsearch.data.Dataset` to use instead of loading one."""
    import torch

    from cnnsearch.config import TrainConfig
    from cnnsearch.data import load_dataset
    from cnnsearch.engine import build_classifier, evaluate, fit, resolve_device

    row = best_trial(experiment) if trial_id is None else experiment.trials.set_index("trial_id", drop=False).loc[trial_id]
    config = dict(experiment.configs[row["trial_id"]])
    target = resolve_device(device)
    state = None
    if not retrain and isinstance(row["checkpoint"], str):
        state = experiment.read_checkpoint(row["trial_id"])
        config = dict(state["config"])
    train_config = TrainConfig.from_dict(config)
    if dataset is None:
        dataset = load_dataset(train_config.dataset, data_dir=data_dir, download=download, progress=False)
    if state is not None:
        model = build_classifier(train_config, dataset)
        model.load_state_dict(state["model"])
        model.to(target)
        model_from = f"restored from its checkpoint (epoch {state['epoch']} of {train_config.epochs})"
    else:
        why = "as asked" if retrain else "no checkpoint"
        model = fit(train_config, dataset, device=target).model
        model_from = f"retrained for {train_config.epochs} epochs ({why})"
    with torch.no_grad():
        result = evaluate(model, dataset.test, num_classes=dataset.num_classes)  # float32: the exact score
    if not math.isfinite(result.loss):
        model_from += "; the test loss is not finite"
    return BestTrial(trial=row, config=config, changes=config_changes(experiment, config), model_from=model_from,
                     test=result, classes=tuple(dataset.classes))
