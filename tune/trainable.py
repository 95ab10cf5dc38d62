"""The function trainable: a thin adapter from a Tune trial to `cnnsearch.fit`.

The data set arrives through `tune.with_parameters` (decoded once in the driver, shared through Ray's
object store); every epoch becomes one `ray.tune.report` with a checkpoint, and a restarted trial
resumes from `ray.tune.get_checkpoint()`.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.tune
import torch

from cnnsearch.config import TrainConfig
from cnnsearch.data import Dataset
from cnnsearch.engine import fit, load_checkpoint
from search_spaces import trial_config

__all__ = ["train_trial", "CHECKPOINT_FILE", "FAILURE_ENV"]

CHECKPOINT_FILE = "state.pt"
# Fault injection for testing recovery: "EPOCH:DIR" makes every trial raise once, after reporting
# EPOCH, while the folder DIR exists (a marker file in DIR remembers that the trial failed). Workers
# inherit the variable when the cluster starts; creating DIR later switches the injection on.
FAILURE_ENV = "CNNSEARCH_INJECT_FAILURE"


def train_trial(params: dict[str, Any], data: Dataset) -> None:
    started_at = time.time()
    # Tune logs a line per saved checkpoint, i.e. per epoch and trial: noise in the driver's console.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    config = TrainConfig.from_dict(trial_config(params))
    device = _claim_device()
    checkpoint = ray.tune.get_checkpoint()
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    fail_after = _injected_failure()

    def on_epoch(metrics: dict[str, Any], epoch_state) -> None:
        with tempfile.TemporaryDirectory() as folder:
            epoch_state.save(Path(folder) / CHECKPOINT_FILE)
            ray.tune.report({**metrics, "started_at": started_at, "device": str(device)},
                            checkpoint=ray.tune.Checkpoint.from_directory(folder))
        if fail_after is not None and metrics["epoch"] == fail_after[0]:
            marker = Path(fail_after[1]) / f"failed-{ray.tune.get_context().get_trial_id()}"
            if not marker.exists():
                marker.touch()
                raise RuntimeError(f"injected failure after epoch {metrics['epoch']} ({FAILURE_ENV})")

    fit(config, data, on_epoch=on_epoch, checkpoint=state, device=device)


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


def _injected_failure() -> tuple[int, str] | None:
    value = os.environ.get(FAILURE_ENV)
    if not value:
        return None
    epoch, folder = value.split(":", 1)
    return (int(epoch), folder) if os.path.isdir(folder) else None
