"""cnnsearch: a model zoo, a real-data pipeline and a training engine for CNNs; runs without Ray.

Attributes load on first use (PEP 562), so `python -m cnnsearch.train --bad-flag` answers before
torch and torchvision are imported.
"""
from __future__ import annotations

from .lazy import lazy_attributes

__all__ = [
    "TrainConfig", "Dataset", "ImageSplit", "load_dataset", "fit", "fit_group", "fit_fused", "fit_seeds", "evaluate", "FitResult", "EvalResult",
    "build_model", "describe_model", "list_models",
]

_HOME = {
    "TrainConfig": "config", "Dataset": "data", "ImageSplit": "data", "load_dataset": "data",
    "fit": "engine", "fit_group": "engine", "fit_fused": "fused", "fit_seeds": "fused", "evaluate": "engine", "FitResult": "engine", "EvalResult": "engine",
    "build_model": "models", "describe_model": "models", "list_models": "models",
}

__getattr__, __dir__ = lazy_attributes(__name__, _HOME)
