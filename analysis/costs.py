"""What the experiment cost, and what its scheduler (ASHA, HyperBand) saved against running every
trial to the end. ("Budget" elsewhere means smoke/cpu/full: how much each trial trains.)"""
from __future__ import annotations

from typing import Any

import pandas as pd

from .load import Experiment

__all__ = ["alive_per_epoch", "cost"]


def alive_per_epoch(experiment: Experiment) -> pd.DataFrame:
    """Per epoch: how many trials reached it (`alive`) and whether the scheduler could stop trials
    there (`rung`: ASHA's rungs, HyperBand's milestones)."""
    rungs = set(experiment.record.rungs)
    epochs = range(1, experiment.max_epochs + 1)
    reached = experiment.trials["epochs"]
    return pd.DataFrame({"epoch": list(epochs), "alive": [int((reached >= e).sum()) for e in epochs],
                         "rung": [e in rungs for e in epochs]})


def cost(experiment: Experiment) -> dict[str, Any]:
    """Trials (by status), epochs trained against epochs planned, wall time and device-hours.

    Device-hours: each Tune trial's wall time times the GPUs it held (GPU-hours) or, without GPUs, the CPU
    cores (core-hours). The scheduler's saving: the epochs its stopped trials did not run, and their
    device-hours at each trial's own time per epoch. A Tune trial is a point with its seeds (TRIAL/seed-N, one
    row each, sharing its clock and resources): its time counts once."""
    trials = experiment.trials
    gpu = float(experiment.record.resources.get("gpu") or 0.0)
    cpu = float(experiment.record.resources.get("cpu") or 1.0)
    per_trial, unit = (gpu, "GPU-hours") if gpu > 0 else (cpu, "CPU core-hours")
    tune_trial = trials["folder"].astype(str).str.split("/", n=1).str[0]
    wall = trials["wall_time_s"].fillna(0.0).groupby(tune_trial).max()
    stopped = trials[trials["stopped_early"]]
    left = (stopped["max_epochs"] - stopped["epochs"]).clip(lower=0)
    saved_s = (stopped["wall_time_s"] / stopped["epochs"].clip(lower=1) * left).fillna(0.0)
    saved_s = saved_s.groupby(tune_trial[stopped.index]).max()
    planned = int(trials["max_epochs"].sum())
    trained = int(trials["epochs"].sum())
    return {
        "trials": len(trials), "by_status": trials["status"].value_counts().to_dict(),
        "stopped_early": int(trials["stopped_early"].sum()), "skipped": len(experiment.skipped),
        "epochs_trained": trained, "epochs_planned": planned,
        "trial_hours": float(wall.sum() / 3600), "device_hours": float(wall.sum() * per_trial / 3600),
        "device_unit": unit, "device_per_trial": per_trial,
        "saved_epochs": int(left.sum()), "saved_fraction": float(left.sum()) / planned if planned else 0.0,
        "saved_device_hours": float(saved_s.sum() * per_trial / 3600),
        "scheduler": experiment.scheduler,
    }
