"""DenseNet-BC (Huang et al. 2017) for CIFAR-size images, built on torchvision's dense blocks.

Growth rate 32 (DenseNet-161: 48, with 96 initial features), bottleneck width 4 * growth, compression
0.5 in the transitions. The stem is the CIFAR one (3x3 stride 1, no max-pool) unless stem_kernel=7.
`width` scales the growth rate and the initial features.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.densenet import _DenseBlock, _Transition

from .layers import STEM_KERNELS, ClassifierHead, ModelArgs, conv_out_size, init_weights, make_stem, scale_channels
from .registry import variant

__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201", "densenet264"]

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
    """stem -> (dense block -> transition) x 3 -> dense block -> BN -> ReLU -> pool -> (dropout) -> Linear.

    `arguments` are `ModelArgs`, with `blocks_per_stage` (layers per dense block) required."""

    def __init__(self, *, growth_rate: int = 32, init_features: int = 64, **arguments: Any) -> None:
        super().__init__()
        a = ModelArgs.check(type(self), arguments, num_stages=4)
        blocks = a.blocks_per_stage
        # Transitions pool 2x2, so the feature map must still be at least 1x1 after the last one.
        if _last_side(a.image_size, a.stem_kernel, len(blocks) - 1) < 1:
            smallest = next(n for n in range(1, 1024) if _last_side(n, a.stem_kernel, len(blocks) - 1) >= 1)
            raise ValueError(
                f"image_size must be >= {smallest} with stem_kernel {a.stem_kernel} "
                f"({len(blocks) - 1} transitions halve it), got {a.image_size}"
            )

        growth = scale_channels(growth_rate, a.width)
        features = scale_channels(init_features, a.width)
        self.stem = make_stem(a.in_channels, features, kernel=a.stem_kernel, bn=a.stem_bn)
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
        self.head = ClassifierHead(features, a.num_classes, a.dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, init_features, H, W)
        for i, stage in enumerate(self.stages):
            x = stage(x)  # channels grow by layers * growth
            if i < len(self.transitions):
                x = self.transitions[i](x)  # channels * 0.5, H and W halved
        x = self.relu(self.norm(x))
        return self.head(x)  # (B, num_classes)


# Huang et al. 2017, Table 1: layers per dense block, growth rate, initial features.
densenet121 = variant("densenet121", DenseNet, blocks_per_stage=(6, 12, 24, 16), growth_rate=32, init_features=64)
densenet169 = variant("densenet169", DenseNet, blocks_per_stage=(6, 12, 32, 32), growth_rate=32, init_features=64)
densenet201 = variant("densenet201", DenseNet, blocks_per_stage=(6, 12, 48, 32), growth_rate=32, init_features=64)
densenet161 = variant("densenet161", DenseNet, blocks_per_stage=(6, 12, 36, 24), growth_rate=48, init_features=96)
densenet264 = variant("densenet264", DenseNet, blocks_per_stage=(6, 12, 64, 48), growth_rate=32, init_features=64)
