"""The function trainable: a thin adapter from a Tune trial to `cnnsearch.fit`.

The data set arrives through `tune.with_parameters` (decoded once in the driver, shared through Ray's
object store); every epoch becomes one `ray.tune.report` with a checkpoint, and a restarted (or
paused and resumed) trial continues from `ray.tune.get_checkpoint()`.
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.tune
import torch

from cnnsearch.config import TrainConfig
from cnnsearch.data import Dataset
from cnnsearch.engine import fit, load_checkpoint
from search_spaces import CHECKPOINT_FILE, trial_config

__all__ = ["train_trial", "checked_config"]


def train_trial(params: dict[str, Any], data: Dataset, *,
                after_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Train one trial: `params` as `tune.plan.Plan.param_space` builds them (see
    `search_spaces.trial_config`), on `data`, on the device its Tune resources give it.

    Each epoch reports the engine's metrics plus `started_at` (the trial's start, Unix seconds) and
    `device`, with a checkpoint (`CHECKPOINT_FILE` in a Tune checkpoint folder); a trial restored
    from a checkpoint continues after its last epoch. `after_epoch(metrics)` runs after each report
    (tune/faults.py injects failures there)."""
    started_at = time.time()
    config = checked_config(params)
    device = _claim_device()
    checkpoint = ray.tune.get_checkpoint()
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)

    def on_epoch(metrics: dict[str, Any], epoch_state) -> None:
        with tempfile.TemporaryDirectory() as folder:
            epoch_state.save(Path(folder) / CHECKPOINT_FILE)
            ray.tune.report({**metrics, "started_at": started_at, "device": str(device)},
                            checkpoint=ray.tune.Checkpoint.from_directory(folder))
        if after_epoch is not None:
            after_epoch(metrics)

    fit(config, data, on_epoch=on_epoch, checkpoint=state, device=device)


def checked_config(params: dict[str, Any]) -> TrainConfig:
    """The trial's TrainConfig from its params (unknown keys raise), refusing params no Plan makes."""
    # Tune logs a line per saved checkpoint, i.e. per epoch and trial: noise in the driver's console.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    # Tune restarts an experiment whose state it cannot restore with one trial of empty params, which
    # TrainConfig's defaults would make a full ResNet-18 run. Every trial a Plan makes has a seed.
    if not params or "seed" not in params:
        raise ValueError(f"refusing trial params {dict(params or {})!r}: not a trial of a cnnsearch plan (no seed); "
                         "was the experiment state lost?")
    return TrainConfig.from_dict(trial_config(params))


def _claim_device() -> torch.device:
    """The trial's device follows the resources Tune gave it. With a fraction f of a GPU, cap this
    process's CUDA memory at f, so one greedy trial cannot starve the trials sharing the card."""
    resources = ray.tune.get_context().get_trial_resources().required_resources
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    if gpus > 0 and torch.cuda.is_available():
        if gpus < 1:
            torch.cuda.set_per_process_memory_fraction(gpus, 0)
        return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU
    return torch.device("cpu")
