"""Fault injection for the recovery tests, kept out of the trainable that experiments run.

With FAILURE_ENV = "EPOCH:DIR" set in the driver, `run_experiment` runs `failing_trial` instead of
`train_trial` (with --fuse, `failing_fused_trial` instead of `fused_trial`): every trial raises once, after
reporting EPOCH, while the folder DIR exists (a marker file in DIR remembers that the trial failed). Workers
inherit the variable when the cluster starts; creating DIR later switches the injection on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray.tune

from cnnsearch.data import Dataset

from .fusion import fused_trial
from .trainable import train_trial

__all__ = ["FAILURE_ENV", "armed", "failing_trial", "failing_fused_trial"]

FAILURE_ENV = "CNNSEARCH_INJECT_FAILURE"


def armed() -> bool:
    """Whether this process asks for failing trials."""
    return bool(os.environ.get(FAILURE_ENV))


def failing_trial(params: dict[str, Any], data: Dataset) -> None:
    """`train_trial`, raising once after the epoch FAILURE_ENV names while its folder exists."""
    train_trial(params, data, after_epoch=_fail_once)


def failing_fused_trial(params: dict[str, Any], **options: Any) -> None:
    """`fused_trial`, raising once after the epoch FAILURE_ENV names while its folder exists."""
    fused_trial(params, after_epoch=_fail_once, **options)


def _fail_once(metrics: dict[str, Any]) -> None:
    epoch, folder = os.environ[FAILURE_ENV].split(":", 1)
    if metrics["epoch"] != int(epoch) or not os.path.isdir(folder):
        return
    marker = Path(folder) / f"failed-{ray.tune.get_context().get_trial_id()}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure after epoch {metrics['epoch']} ({FAILURE_ENV})")
