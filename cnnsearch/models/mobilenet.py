"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018) with CIFAR strides.

As in kuangliu/pytorch-cifar, the stem and the early stages keep stride 1 so a 32x32 image is not
shrunk to 1x1: v1 downsamples 16x in total and v2 8x, instead of ImageNet's 32x. `width` is the usual width
multiplier (channels rounded to a multiple of 8, torchvision's `_make_divisible`); v2's last 1x1
conv keeps 1280 channels for width < 1, as in the paper and torchvision.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn
from torchvision.models._utils import _make_divisible
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import Conv2dNormActivation

from .layers import ClassifierHead, ModelArgs, init_weights, make_stem
from .registry import variant

__all__ = ["V1_STAGES", "V2_STAGES", "DepthwiseSeparable", "MobileNetV1", "MobileNetV2", "mobilenet_v1", "mobilenet_v2"]

_ROUND = 8  # channel counts are rounded to multiples of this

# v1: (out channels, stride of the stage's first block, blocks); kuangliu's cfg
# [64, (128,2), 128, (256,2), 256, (512,2), 512 x5, (1024,2), 1024] grouped by stage.
V1_STAGES: tuple[tuple[int, int, int], ...] = (
    (64, 1, 1),
    (128, 2, 2),
    (256, 2, 2),
    (512, 2, 6),
    (1024, 2, 2),
)

# v2: (expansion t, out channels c, blocks n, first stride s); Sandler et al. Table 2 with the
# first two strides set to 1 for 32x32 inputs (kuangliu's CIFAR version).
V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv -> BN -> ReLU -> 1x1 pointwise conv -> BN -> ReLU (MobileNet v1's block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            OrderedDict(
                depthwise=Conv2dNormActivation(in_channels, in_channels, 3, stride, groups=in_channels),
                pointwise=Conv2dNormActivation(in_channels, out_channels, 1),
            )
        )


class MobileNetV1(nn.Module):
    """stem (32 ch) -> 5 stages of depthwise-separable blocks -> pool -> (dropout) -> Linear.

    `arguments` are `ModelArgs`, with `blocks_per_stage` required."""

    def __init__(self, **arguments: Any) -> None:
        super().__init__()
        a = ModelArgs.check(type(self), arguments, num_stages=len(V1_STAGES))

        channels = _make_divisible(32 * a.width, _ROUND)
        self.stem = make_stem(a.in_channels, channels, kernel=a.stem_kernel, bn=a.stem_bn)
        stages = []
        for (out, stride, _), count in zip(V1_STAGES, a.blocks_per_stage):
            out = _make_divisible(out * a.width, _ROUND)
            layers = [DepthwiseSeparable(channels, out, stride)]
            layers += [DepthwiseSeparable(out, out) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(channels, a.num_classes, a.dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, 32 * width, H, W)
        x = self.stages(x)  # (B, 1024 * width, H/16, W/16)
        return self.head(x)  # (B, num_classes)


class MobileNetV2(nn.Module):
    """stem (32 ch) -> 7 stages of inverted residuals -> 1x1 conv (1280 ch) -> pool -> (dropout) -> Linear.

    `arguments` are `ModelArgs`, with `blocks_per_stage` required."""

    def __init__(self, **arguments: Any) -> None:
        super().__init__()
        a = ModelArgs.check(type(self), arguments, num_stages=len(V2_STAGES))

        channels = _make_divisible(32 * a.width, _ROUND)
        self.stem = make_stem(a.in_channels, channels, kernel=a.stem_kernel, bn=a.stem_bn, activation=nn.ReLU6)
        stages = []
        for (expansion, out, _, stride), count in zip(V2_STAGES, a.blocks_per_stage):
            out = _make_divisible(out * a.width, _ROUND)
            layers = [InvertedResidual(channels, out, stride, expansion)]
            layers += [InvertedResidual(out, out, 1, expansion) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.stages = nn.Sequential(*stages)
        last = _make_divisible(1280 * max(1.0, a.width), _ROUND)
        self.last_conv = Conv2dNormActivation(channels, last, kernel_size=1, activation_layer=nn.ReLU6)
        self.head = ClassifierHead(last, a.num_classes, a.dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, 32 * width, H, W)
        x = self.stages(x)  # (B, 320 * width, H/8, W/8)
        x = self.last_conv(x)  # (B, 1280, H/8, W/8)
        return self.head(x)  # (B, num_classes)


# 13 depthwise-separable blocks as 5 stages [1, 2, 2, 6, 2]; 17 inverted residuals as 7 stages [1, 2, 3, 4, 3, 3, 1].
mobilenet_v1 = variant("mobilenet_v1", MobileNetV1, blocks_per_stage=tuple(n for _, _, n in V1_STAGES))
mobilenet_v2 = variant("mobilenet_v2", MobileNetV2, blocks_per_stage=tuple(n for _, _, n, _ in V2_STAGES))
