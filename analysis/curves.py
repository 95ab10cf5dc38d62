"""Learning curves over seeds: per-level mean and band per epoch, and report A's "critical epoch"
(the epoch after which validation loss rises: where over-fitting starts)."""
from __future__ import annotations

import pandas as pd

from .comparisons import group_trials
from .load import Experiment

__all__ = ["level_curves", "critical_epochs"]


def level_curves(experiment: Experiment, factor: str, *, metrics: tuple[str, ...] = ("val_acc", "val_loss")) -> pd.DataFrame:
    """Per level of `factor` and epoch: the mean of each metric over the level's trials (see
    `effects.group_trials`) with its range (low, high) and the number of trials `n` that reached the
    epoch. Later epochs hold only the trials ASHA let run, so read them with that in mind."""
    spec = experiment.factor(factor)
    if spec is None:
        raise KeyError(f"{factor!r} is not a factor of this experiment")
    frames = []
    for level in spec.by_key():
        ids = group_trials(experiment, factor, level)["trial_id"]
        rows = experiment.epochs[experiment.epochs["trial_id"].isin(ids)]
        if not len(rows):
            continue
        for metric in metrics:
            agg = rows.groupby("epoch")[metric].agg(["mean", "min", "max", "count"]).reset_index()
            agg.columns = ["epoch", "mean", "low", "high", "n"]
            frames.append(agg.assign(level=level, metric=metric))
    columns = ["level", "metric", "epoch", "mean", "low", "high", "n"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def critical_epochs(experiment: Experiment, *, by: str = "label") -> pd.DataFrame:
    """Per group (design point by default): mean train and val loss per epoch over its trials, the
    epoch of the lowest mean val loss, and `critical_epoch`: that epoch if val loss rose after it
    (the report's "critical epoch"), else missing (still falling when the trials stopped)."""
    rows = []
    for name, group in experiment.epochs.groupby(by, sort=False):
        curve = group.groupby("epoch")[["train_loss", "val_loss"]].mean()
        val = curve["val_loss"].dropna()
        if val.empty:
            continue
        best = int(val.idxmin())
        rising = bool((val.loc[best:] > val.loc[best]).any())
        rows.append({by: name, "trials": group["trial_id"].nunique(), "epochs": int(curve.index.max()),
                     "min_val_loss_epoch": best, "critical_epoch": best if rising else None,
                     "min_val_loss": float(val.min()), "last_val_loss": float(val.iloc[-1]),
                     "last_train_loss": float(curve["train_loss"].iloc[-1])})
    out = pd.DataFrame(rows, columns=[by, "trials", "epochs", "min_val_loss_epoch", "critical_epoch", "min_val_loss",
                                      "last_val_loss", "last_train_loss"])
    out["critical_epoch"] = out["critical_epoch"].astype("Int64")
    return out
