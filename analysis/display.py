"""How numbers and metrics read in tables, figures and reports: accuracies in percent, losses as they are."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from search_spaces import level_label

__all__ = ["scale", "metric_label", "num", "changes", "dataset_name"]

_LABELS = {"val_acc": "val accuracy (%)", "train_acc": "train accuracy (%)", "val_loss": "val loss (cross-entropy)",
           "train_loss": "train loss (cross-entropy)"}


def scale(metric: str) -> float:
    """What a value of `metric` is multiplied by for display: 100 for an accuracy (shown in %), else 1."""
    return 100.0 if metric.endswith("acc") else 1.0


def metric_label(metric: str) -> str:
    """An axis label for `metric`, with its unit."""
    return _LABELS.get(metric, metric)


def num(value: Any, digits: int = 2, sign: bool = False) -> str:
    """`value` with `digits` decimals (and its sign), or "n/a" when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def changes(config: dict[str, Any]) -> str:
    """Config keys that differ from a base, as `key=level, ...`, or "nothing"."""
    return ", ".join(f"{k}={level_label(v)}" for k, v in config.items()) or "nothing"


_DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST"}


def dataset_name(dataset: str) -> str:
    """A data set as people name it: `CIFAR-10`, or `image folder PATH` for `imagefolder:PATH`."""
    if dataset.startswith("imagefolder:"):
        return f"image folder {dataset.split(':', 1)[1]}"
    return _DATASETS.get(dataset, dataset)
