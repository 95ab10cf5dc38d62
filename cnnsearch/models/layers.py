"""Pieces every model family shares: its keyword arguments (declared and checked once, in `ModelArgs`),
channel scaling, the stem, the head, weight init.

The checks live here (not in the registry) so that a model class built directly is checked as
strictly as one built through `build_model`. They are plain Python on the arguments, never on
tensors, so they work the same when a model is built under `with torch.device("meta"):`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn
from torchvision.ops import Conv2dNormActivation

__all__ = [
    "DATA_ARGS",
    "OPTION_NAMES",
    "STEM_KERNELS",
    "ClassifierHead",
    "ModelArgs",
    "check_blocks_per_stage",
    "check_bool",
    "check_dropout",
    "check_positive_int",
    "check_stem_kernel",
    "check_width",
    "conv_out_size",
    "init_weights",
    "make_stem",
    "option_defaults",
    "scale_channels",
]

# stem kernel -> (stride, padding). 3: the CIFAR stem (3x3, stride 1, no max-pool). 7: the ImageNet
# stem's convolution (7x7, stride 2, padding 3) as report E ablated it, also without the max-pool.
STEM_KERNELS: dict[int, tuple[int, int]] = {3: (1, 1), 7: (2, 3)}

# Arguments every family takes; they describe the data, not the architecture, so they are not options.
DATA_ARGS = ("num_classes", "in_channels", "image_size")


@dataclass(frozen=True)
class ModelArgs:
    """The keyword arguments of every family, declared once: the data arguments and the options
    (`OPTION_NAMES`) with the defaults every family shares. A family takes all options or names the
    few it takes (`options` on its class); `blocks_per_stage` has no shared default: each variant
    gives its depth table (`registry.variant`)."""

    num_classes: int
    in_channels: int = 3
    image_size: int = 32
    stem_kernel: int = 3
    stem_bn: bool = True
    dropout: float = 0.0
    blocks_per_stage: tuple[int, ...] | None = None
    width: float = 1.0

    @classmethod
    def check(cls, family: type, arguments: Mapping[str, object], *, num_stages: int | None = None) -> ModelArgs:
        """`arguments` of `family`'s constructor, checked; `num_stages` for a family with stages."""
        takes = getattr(family, "options", OPTION_NAMES)
        unexpected = sorted(set(arguments) - {*DATA_ARGS, *takes})
        if unexpected:
            raise TypeError(f"{family.__name__} takes {', '.join((*DATA_ARGS, *takes))}; got {', '.join(unexpected)}")
        args = cls(**arguments)  # type: ignore[arg-type]
        checked = {
            "num_classes": check_positive_int("num_classes", args.num_classes),
            "in_channels": check_positive_int("in_channels", args.in_channels),
            "image_size": check_positive_int("image_size", args.image_size),
            "dropout": check_dropout(args.dropout),
            "width": check_width(args.width),
        }
        if "stem_kernel" in takes:
            checked.update(stem_kernel=check_stem_kernel(args.stem_kernel), stem_bn=check_bool("stem_bn", args.stem_bn))
        if num_stages is not None:
            checked["blocks_per_stage"] = check_blocks_per_stage(args.blocks_per_stage, num_stages)
        return dataclasses.replace(args, **checked)


# The options, in declaration order. Read off `ModelArgs` rather than imported from `cnnsearch.config`
# (whose MODEL_OPTION_KEYS forwards the same keys; tests/test_models.py checks they agree), so that the
# models never import the config, which asks the models whether a configuration builds.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelArgs) if f.name not in DATA_ARGS)


def option_defaults(family: type) -> dict[str, object]:
    """The options `family` takes, mapped to the defaults `ModelArgs` declares (in OPTION_NAMES order)."""
    takes = getattr(family, "options", OPTION_NAMES)
    return {f.name: f.default for f in dataclasses.fields(ModelArgs) if f.name in takes}


# ---------------------------------------------------------------------------------------- checks
def check_positive_int(name: str, value: object) -> int:
    """`value` as an int >= 1, or ValueError (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_stem_kernel(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) not in STEM_KERNELS:
        allowed = " or ".join(str(k) for k in STEM_KERNELS)
        raise ValueError(f"stem_kernel must be {allowed}, got {value!r}")
    return int(value)


def check_dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def check_width(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) <= 0.0
    ):
        raise ValueError(f"width must be a finite number > 0, got {value!r}")
    return float(value)


def check_blocks_per_stage(value: object, num_stages: int) -> tuple[int, ...]:
    """`value` as a tuple of `num_stages` positive ints, or ValueError saying what is expected."""
    expected = f"blocks_per_stage must be a sequence of {num_stages} integers >= 1"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{expected}, got {value!r}")
    if len(value) != num_stages:
        raise ValueError(f"{expected} (one per stage), got {len(value)}: {list(value)!r}")
    for count in value:
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
            raise ValueError(f"{expected}, got {list(value)!r}")
    return tuple(int(count) for count in value)


# -------------------------------------------------------------------------------------- helpers
def scale_channels(channels: int, width: float) -> int:
    """Channels times the width multiplier, rounded to the nearest int and never below 1."""
    return max(1, round(channels * width))


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling window (floor mode), in pixels."""
    return (size + 2 * padding - kernel) // stride + 1


def make_stem(
    in_channels: int,
    out_channels: int,
    *,
    kernel: int,
    bn: bool,
    activation: Callable[..., nn.Module] = nn.ReLU,
) -> Conv2dNormActivation:
    """conv (kernel 3: stride 1; kernel 7: stride 2) -> BatchNorm (if `bn`) -> activation.

    Without BatchNorm the conv gets a bias (Conv2dNormActivation's `bias=None` rule). No max-pool
    in either case. Index 0 is always the conv, so `stem[0]` is the model's first layer.
    """
    stride, padding = STEM_KERNELS[kernel]
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        norm_layer=nn.BatchNorm2d if bn else None,
        activation_layer=activation,
    )


class ClassifierHead(nn.Sequential):
    """(B, C, H, W) -> global average pool -> (B, C) -> Dropout(p) if p > 0 -> Linear -> (B, classes)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                dropout=nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                fc=nn.Linear(in_features, num_classes),
            )
        )


def init_weights(model: nn.Module) -> None:
    """torchvision's ResNet init: Kaiming-normal convs (fan_out, ReLU), norms at 1/0, zero conv biases.

    Linear layers keep PyTorch's default init, as in torchvision's ResNet.
    """
    if any(p.is_meta for p in model.parameters()):
        return  # built on the meta device to validate options: there are no values to initialise
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
