"""What the experiment cost, and what ASHA saved against running every trial to the end."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .load import Experiment

__all__ = ["asha_rungs", "alive_per_epoch", "cost"]


def asha_rungs(experiment: Experiment) -> list[int]:
    """The epochs at which ASHA decided (grace period x reduction factor^k, below the maximum), computed
    as Ray's ASHAScheduler does; empty for FIFO."""
    if experiment.scheduler != "asha":
        return []
    grace, factor, max_t = int(experiment.state["grace_period"]), int(experiment.state["reduction_factor"]), experiment.max_epochs
    count = int(math.log(max_t / grace) / math.log(factor) + 1)
    return sorted(r for r in (grace * factor ** k for k in range(count)) if r < max_t)


def alive_per_epoch(experiment: Experiment) -> pd.DataFrame:
    """Per epoch: how many trials reached it (`alive`) and whether it is an ASHA rung."""
    rungs = set(asha_rungs(experiment))
    epochs = range(1, experiment.max_epochs + 1)
    reached = experiment.trials["epochs"]
    return pd.DataFrame({"epoch": list(epochs), "alive": [int((reached >= e).sum()) for e in epochs],
                         "rung": [e in rungs for e in epochs]})


def cost(experiment: Experiment) -> dict[str, Any]:
    """Trials (by status), epochs trained against epochs planned, wall time and device-hours.

    Device-hours: each trial's wall time times the GPUs it held (GPU-hours) or, without GPUs, the CPU
    cores (core-hours). ASHA's saving: the epochs its stopped trials did not run, and their device-hours
    at each trial's own time per epoch."""
    trials = experiment.trials
    gpu = float(experiment.state.get("resources", {}).get("gpu") or 0.0)
    cpu = float(experiment.state.get("resources", {}).get("cpu") or 1.0)
    per_trial, unit = (gpu, "GPU-hours") if gpu > 0 else (cpu, "CPU core-hours")
    wall = trials["wall_time_s"].fillna(0.0)
    stopped = trials[trials["stopped_early"]]
    left = (stopped["max_epochs"] - stopped["epochs"]).clip(lower=0)
    saved_s = (stopped["wall_time_s"] / stopped["epochs"].clip(lower=1) * left).fillna(0.0)
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
