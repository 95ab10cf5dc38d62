"""The training configuration: one frozen, validated dataclass.

Every run, whether from the CLI, a test or a Ray Tune trial, is described by a `TrainConfig`.
Ray's config dict is converted once, with `TrainConfig.from_dict`, which rejects unknown keys.
The model part is checked against the data set's geometry (`cnnsearch.data.sources.geometry`) by the
model registry (`cnnsearch.models.count_parameters`), once per distinct (model, options, geometry). The
models never import this module, so importing it loads neither them nor torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

__all__ = ["TrainConfig", "OPTIMIZERS", "LR_SCHEDULES", "MODEL_OPTION_KEYS", "MAX_SEED"]

OPTIMIZERS = ("sgd", "adam", "adamw", "adamax")
LR_SCHEDULES = ("none", "exponential", "step", "cosine")
MAX_PARAMETERS = 10**10  # 40 GB of fp32 weights, before gradients and optimizer state: no single GPU trains it
MAX_SEED = 2**32 - 1  # numpy's and Optuna's seeds are 32-bit; torch's generators overflow past 2**63
# Config keys forwarded to `build_model` as options (None = the family's default).
MODEL_OPTION_KEYS = ("stem_kernel", "stem_bn", "dropout", "blocks_per_stage", "width")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are report E's baseline (ResNet-18, Adam 1e-3, batch 512, 30 epochs,
    lr x0.9 per epoch)."""

    # Model: a registry name and the options it takes (None = the family's default).
    model: str = "resnet18"
    stem_kernel: int | None = None
    stem_bn: bool | None = None
    dropout: float | None = None
    blocks_per_stage: tuple[int, ...] | None = None
    width: float | None = None
    # Data.
    dataset: str = "cifar10"
    val_size: int = 5000  # images carved from train (stratified) for validation
    split_seed: int = 0  # fixed across seeds, so repeats differ only in training randomness
    train_subset: int | None = None  # images per class kept for training; None = all
    augment: bool | None = None  # None = the data set's default (crop+flip for CIFAR, none for MNIST)
    # Optimisation.
    batch_size: int = 512
    epochs: int = 30
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    lr_schedule: str = "exponential"
    lr_decay: float = 0.9  # per-epoch factor for `exponential`, factor per `step_size` epochs for `step`
    step_size: int = 10  # epochs between decays for `step`
    label_smoothing: float = 0.0
    seed: int = 0
    # Execution: where and how fast, never what is learned (except bf16's rounding).
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool | None = None  # bf16 autocast; None = on for CUDA, off for CPU
    channels_last: bool | None = None  # None = on for CUDA, off for CPU
    compile: bool = False  # torch.compile the model
    cuda_graph: bool | None = None  # replay the training step as one CUDA graph; None = on for CUDA (see engine)
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.blocks_per_stage is not None and not isinstance(self.blocks_per_stage, tuple):
            object.__setattr__(self, "blocks_per_stage", tuple(self.blocks_per_stage))
        for name, kind in (("batch_size", int), ("epochs", int), ("val_size", int), ("step_size", int),
                           ("seed", int), ("split_seed", int), ("eval_batch_size", int)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        _positive(self, "batch_size", "epochs", "val_size", "step_size", "eval_batch_size")
        for name in ("seed", "split_seed"):
            if not 0 <= getattr(self, name) <= MAX_SEED:
                raise ValueError(f"{name} must be in [0, {MAX_SEED}], got {getattr(self, name)}")
        if self.train_subset is not None and (not isinstance(self.train_subset, int) or self.train_subset < 1):
            raise ValueError(f"train_subset must be a positive number of images per class or null, got {self.train_subset!r}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _finite(self, "lr", "momentum", "weight_decay", "lr_decay", "label_smoothing")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1] (1.0 = no decay), got {self.lr_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        self._check_dataset()
        for name in ("bf16", "channels_last", "cuda_graph"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name} must be true, false or null (automatic), got {getattr(self, name)!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self._check_model()

    def _check_dataset(self) -> None:
        from .data.sources import BUILTIN_NAMES, IMAGEFOLDER_PREFIX, VALID_NAMES

        name = self.dataset
        folder = isinstance(name, str) and name.startswith(IMAGEFOLDER_PREFIX) and len(name) > len(IMAGEFOLDER_PREFIX)
        if not (name in BUILTIN_NAMES or folder):
            raise ValueError(f"dataset must be one of {VALID_NAMES}, got {name!r}")

    def _check_model(self) -> None:
        """Unknown model names, options and values the family cannot take, for this data set's images;
        an image folder that cannot be read from here is checked when its data is loaded."""
        from .data.sources import geometry

        shape = geometry(self.dataset)
        if shape is not None:
            error = _model_error(self.model, self.model_options(), shape)
            if error is not None:
                raise ValueError(error)

    def model_options(self) -> dict[str, Any]:
        """The options to pass to `build_model`: only those set, so family defaults apply otherwise."""
        return {k: getattr(self, k) for k in MODEL_OPTION_KEYS if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Convert a plain dict (YAML, Ray Tune's config) once; unknown keys raise."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        if out["blocks_per_stage"] is not None:
            out["blocks_per_stage"] = list(out["blocks_per_stage"])
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_MODEL_ERRORS: dict[str, str | None] = {}  # repr((model, options, geometry)) -> None or the complaint


def _model_error(model: Any, options: dict[str, Any], shape: Any) -> str | None:
    """None if `model` with `options` builds for images of `shape`, else the one-line complaint.

    The registry builds the network on the meta device to count its parameters; that takes up to a
    tenth of a second, so each distinct network is asked about once per process; every construction
    and `.replace()` after that is a lookup. repr keys the cache: it tells True from 1 and 1 from 1.0,
    as the checks do."""
    key = repr((model, options, tuple(shape)))
    if key not in _MODEL_ERRORS:
        from .models import count_parameters  # deferred: the models import torch

        if len(_MODEL_ERRORS) >= 4096:  # a long sampled search: keep memory bounded
            _MODEL_ERRORS.clear()
        try:
            size = count_parameters(model, num_classes=shape.num_classes, in_channels=shape.in_channels,
                                    image_size=shape.image_size, **options)
        except (ValueError, TypeError) as exc:
            _MODEL_ERRORS[key] = str(exc)
        except RuntimeError as exc:  # torch: a tensor too large to describe, e.g. from a huge width
            _MODEL_ERRORS[key] = f"{model} with {options} cannot be built ({' '.join(str(exc).split())[:120]})"
        else:
            _MODEL_ERRORS[key] = None if size <= MAX_PARAMETERS else (
                f"{model} with {options} has {size:.3g} parameters; at most {MAX_PARAMETERS:.0e} train on one device "
                "(is the width too large?)")
    return _MODEL_ERRORS[key]


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _positive(config: TrainConfig, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


def _finite(config: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
