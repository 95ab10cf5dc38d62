"""DenseNet-BC (Huang et al. 2017) for CIFAR-size images, built on torchvision's dense blocks.

Growth rate 32 (DenseNet-161: 48, with 96 initial features), bottleneck width 4 * growth, compression
0.5 in the transitions. The stem is the CIFAR one (3x3 stride 1, no max-pool) unless stem_kernel=7.
`width` scales the growth rate and the initial features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torchvision.models.densenet import _DenseBlock, _Transition

from .layers import (
    STEM_KERNELS,
    ClassifierHead,
    check_blocks_per_stage,
    check_bool,
    check_common,
    check_dropout,
    check_stem_kernel,
    check_width,
    conv_out_size,
    init_weights,
    make_stem,
    scale_channels,
)
from .registry import register_model

__all__ = ["DENSENET_CONFIGS", "DenseNet"]

# name -> (layers per dense block, growth rate, initial features); Huang et al. 2017, Table 1.
DENSENET_CONFIGS: dict[str, tuple[tuple[int, int, int, int], int, int]] = {
    "densenet121": ((6, 12, 24, 16), 32, 64),
    "densenet169": ((6, 12, 32, 32), 32, 64),
    "densenet201": ((6, 12, 48, 32), 32, 64),
    "densenet161": ((6, 12, 36, 24), 48, 96),
    "densenet264": ((6, 12, 64, 48), 32, 64),
}

BN_SIZE = 4  # bottleneck 1x1 conv outputs BN_SIZE * growth channels
COMPRESSION = 0.5  # a transition keeps this fraction of its input channels


def _last_side(image_size: int, stem_kernel: int, num_transitions: int) -> int:
    """Side of the last dense block's feature map, in pixels (each transition halves it)."""
    stride, padding = STEM_KERNELS[stem_kernel]
    side = conv_out_size(image_size, stem_kernel, stride, padding)
    for _ in range(num_transitions):
        side //= 2
    return side


class DenseNet(nn.Module):
    """stem -> (dense block -> transition) x 3 -> dense block -> BN -> ReLU -> pool -> (dropout) -> Linear."""

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        *,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        growth_rate: int = 32,
        init_features: int = 64,
        stem_kernel: int = 3,
        stem_bn: bool = True,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        num_classes, in_channels, image_size = check_common(num_classes, in_channels, image_size)
        blocks = check_blocks_per_stage(blocks_per_stage, 4)
        stem_kernel, stem_bn = check_stem_kernel(stem_kernel), check_bool("stem_bn", stem_bn)
        dropout, width = check_dropout(dropout), check_width(width)
        # Transitions pool 2x2, so the feature map must still be at least 1x1 after the last one.
        if _last_side(image_size, stem_kernel, len(blocks) - 1) < 1:
            smallest = next(n for n in range(1, 1024) if _last_side(n, stem_kernel, len(blocks) - 1) >= 1)
            raise ValueError(
                f"image_size must be >= {smallest} with stem_kernel {stem_kernel} "
                f"({len(blocks) - 1} transitions halve it), got {image_size}"
            )

        growth = scale_channels(growth_rate, width)
        features = scale_channels(init_features, width)
        self.stem = make_stem(in_channels, features, kernel=stem_kernel, bn=stem_bn)
        stages, transitions = [], []
        for i, count in enumerate(blocks):
            stages.append(_DenseBlock(count, features, bn_size=BN_SIZE, growth_rate=growth, drop_rate=0.0))
            features += count * growth  # each layer concatenates `growth` new channels
            if i < len(blocks) - 1:
                compressed = max(1, int(features * COMPRESSION))
                transitions.append(_Transition(features, compressed))
                features = compressed
        self.stages = nn.ModuleList(stages)
        self.transitions = nn.ModuleList(transitions)
        self.norm = nn.BatchNorm2d(features)  # DenseNet-BC layers are pre-activation: close with BN-ReLU
        self.relu = nn.ReLU(inplace=True)
        self.head = ClassifierHead(features, num_classes, dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, init_features, H, W)
        for i, stage in enumerate(self.stages):
            x = stage(x)  # channels grow by layers * growth
            if i < len(self.transitions):
                x = self.transitions[i](x)  # channels * 0.5, H and W halved
        x = self.relu(self.norm(x))
        return self.head(x)  # (B, num_classes)


def _densenet_builder(
    name: str, depths: tuple[int, ...], growth_rate: int, init_features: int
) -> Callable[..., DenseNet]:
    """A registry builder for one variant; its signature declares the family's options."""

    def builder(
        *,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        stem_kernel: int = 3,
        stem_bn: bool = True,
        dropout: float = 0.0,
        blocks_per_stage: Sequence[int] = depths,
        width: float = 1.0,
    ) -> DenseNet:
        return DenseNet(
            blocks_per_stage,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            growth_rate=growth_rate,
            init_features=init_features,
            stem_kernel=stem_kernel,
            stem_bn=stem_bn,
            dropout=dropout,
            width=width,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name}: dense blocks of {list(depths)} layers, growth {growth_rate}, CIFAR stem."
    return builder


for _name, (_depths, _growth, _init) in DENSENET_CONFIGS.items():
    register_model(_name)(_densenet_builder(_name, _depths, _growth, _init))
