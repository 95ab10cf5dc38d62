"""cnnsearch: a model zoo, a real-data pipeline and a training engine for CNNs; runs without Ray.

Attributes load on first use (PEP 562), so `python -m cnnsearch.train --bad-flag` answers before
torch and torchvision are imported.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TrainConfig", "Dataset", "ImageSplit", "load_dataset", "fit", "evaluate", "FitResult", "EvalResult",
    "build_model", "describe_model", "list_models",
]

_HOME = {
    "TrainConfig": "config", "Dataset": "data", "ImageSplit": "data", "load_dataset": "data",
    "fit": "engine", "evaluate": "engine", "FitResult": "engine", "EvalResult": "engine",
    "build_model": "models", "describe_model": "models", "list_models": "models",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'cnnsearch' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
