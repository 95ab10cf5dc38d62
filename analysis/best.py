"""The best trial of an experiment, evaluated once on the test split; the command that retrains it and
the export of its model.

The model comes from the checkpoint of the trial's best epoch (Tune keeps it besides the latest; in
experiments from before that, the latest is used) or, when there is none or `retrain` is asked for,
from training its config again for its full epochs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from search_spaces import best_index

from .load import Experiment

__all__ = ["BestTrial", "best_trial", "evaluate_best", "config_changes", "retrain_command", "export_model"]


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
    model: Any = None  # the evaluated cnnsearch.engine.ImageClassifier, in eval mode
    image_shape: tuple[int, int, int] = (3, 32, 32)  # (C, H, W) of the data set's images


def best_trial(experiment: Experiment, *, metric: str | None = None) -> pd.Series:
    """The trial with the best value of `metric` at any epoch it trained (the space's metric and mode)."""
    metric = metric or experiment.metric
    scores = experiment.trials[f"best_{metric}"].astype(float)
    if scores.isna().all():
        raise ValueError(f"no trial has a finite {metric}")
    return experiment.trials.loc[best_index(scores, experiment.record.mode_of(metric))]


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
    state, kept = None, ""
    if not retrain and isinstance(row.get("best_checkpoint"), str):
        state, kept = experiment.read_checkpoint(row["trial_id"], best=True), f"the checkpoint of its best {experiment.metric}"
    elif not retrain and isinstance(row["checkpoint"], str):
        state = experiment.read_checkpoint(row["trial_id"])
        kept = "its last checkpoint (the best epoch's was not kept)"
    if state is not None:
        config = dict(state["config"])
    train_config = TrainConfig.from_dict(config)
    if dataset is None:
        dataset = load_dataset(train_config.dataset, data_dir=data_dir, download=download, progress=False)
    if state is not None:
        model = build_classifier(train_config, dataset)
        model.load_state_dict(state["model"])
        model.to(target)
        model_from = f"restored from {kept} (epoch {state['epoch']} of {train_config.epochs})"
    else:
        why = "as asked" if retrain else "no checkpoint"
        model = fit(train_config, dataset, device=target).model
        model_from = f"retrained for {train_config.epochs} epochs ({why})"
    with torch.no_grad():
        result = evaluate(model, dataset.test, num_classes=dataset.num_classes)  # float32: the exact score
    if not math.isfinite(result.loss):
        model_from += "; the test loss is not finite"
    return BestTrial(trial=row, config=config, changes=config_changes(experiment, config), model_from=model_from,
                     test=result, classes=tuple(dataset.classes), model=model.eval(),
                     image_shape=(dataset.in_channels, dataset.image_size, dataset.image_size))


def retrain_command(config: dict[str, Any], out: str) -> str:
    """The `python -m cnnsearch.train` command line that trains `config` again, into folder `out`: a
    flag for the model, data set, epochs and every key that differs from TrainConfig's defaults (the
    device is left to the machine)."""
    import shlex

    from cnnsearch.config import TrainConfig

    words = ["python", "-m", "cnnsearch.train"]
    for key, value in config.items():
        if key == "device" or (key not in ("model", "dataset", "epochs") and value == getattr(TrainConfig, key, object())):
            continue
        flag = "--" + ("arch" if key == "model" else key.replace("_", "-"))
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            words += [flag, text]
    return shlex.join([*words, "--out", out])


def export_model(best: BestTrial, folder: str) -> list[str]:
    """Write the best trial's model to `folder`: model.pt2, a torch.export program (uint8 images
    (B, C, H, W) in, logits (B, K) out; `torch.export.load(path).module()` runs it with torch alone,
    normalisation included) and winner.json (config, classes, trial, test accuracy). Returns the paths."""
    import json
    import os

    import torch

    os.makedirs(folder, exist_ok=True)
    model = best.model.to("cpu").eval()
    example = torch.zeros((2, *best.image_shape), dtype=torch.uint8)  # (B, C, H, W)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    paths = [os.path.join(folder, "model.pt2"), os.path.join(folder, "winner.json")]
    torch.export.save(program, paths[0])
    with open(paths[1], "w") as f:
        json.dump({"config": best.config, "classes": list(best.classes), "image_shape": list(best.image_shape),
                   "trial": str(best.trial["folder"]), "model_from": best.model_from,
                   "test_accuracy": best.test.accuracy, "test_images": int(best.test.confusion.sum())}, f, indent=2)
    return paths
