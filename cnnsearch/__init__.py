"""cnnsearch: a model zoo, a real-data pipeline and a training engine for CNNs; runs without Ray."""
from __future__ import annotations

from .config import TrainConfig
from .data import Dataset, ImageSplit, load_dataset
from .engine import EvalResult, FitResult, evaluate, fit
from .models import build_model, describe_model, list_models

__all__ = [
    "TrainConfig", "Dataset", "ImageSplit", "load_dataset", "fit", "evaluate", "FitResult", "EvalResult",
    "build_model", "describe_model", "list_models",
]
