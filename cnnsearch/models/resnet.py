"""ResNet for CIFAR-size images (He et al. 2016), built on torchvision's BasicBlock and Bottleneck.

Differences from torchvision's ImageNet ResNet, as in kuangliu/pytorch-cifar: the stem is a 3x3
stride-1 conv with no max-pool (or 7x7 stride 2, still no max-pool, for report E's ablation), and
the stage widths scale with `width`. Stages have strides 1, 2, 2, 2; the head is global average
pool -> (dropout) -> Linear. CIFAR ResNet-18 at width 1 has 11,173,962 parameters for 10 classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from .layers import (
    ClassifierHead,
    check_blocks_per_stage,
    check_bool,
    check_common,
    check_dropout,
    check_stem_kernel,
    check_width,
    init_weights,
    make_stem,
    scale_channels,
)
from .registry import register_model

__all__ = ["RESNET_DEPTHS", "ResNet", "resnet_builder"]

Block = type[BasicBlock] | type[Bottleneck]

# name -> (block, blocks per stage); He et al. 2016, Table 1.
RESNET_DEPTHS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}

_STAGE_PLANES = (64, 128, 256, 512)  # planes per stage at width 1; a block outputs planes * expansion
_STAGE_STRIDES = (1, 2, 2, 2)


class ResNet(nn.Module):
    """stem -> 4 stages of residual blocks -> global average pool -> (dropout) -> Linear.

    `block` is any BasicBlock/Bottleneck-compatible class (same constructor, `expansion`
    attribute), which is how SE-ResNet reuses this class. `image_size` is only checked: global
    average pooling makes the network size-agnostic.
    """

    def __init__(
        self,
        block: Block,
        blocks_per_stage: Sequence[int],
        *,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        stem_kernel: int = 3,
        stem_bn: bool = True,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        num_classes, in_channels, image_size = check_common(num_classes, in_channels, image_size)
        blocks = check_blocks_per_stage(blocks_per_stage, len(_STAGE_PLANES))
        stem_kernel, stem_bn = check_stem_kernel(stem_kernel), check_bool("stem_bn", stem_bn)
        dropout, width = check_dropout(dropout), check_width(width)

        planes = [scale_channels(p, width) for p in _STAGE_PLANES]
        self.stem = make_stem(in_channels, planes[0], kernel=stem_kernel, bn=stem_bn)
        inplanes = planes[0]
        stages = []
        for stage_planes, count, stride in zip(planes, blocks, _STAGE_STRIDES):
            stages.append(_make_stage(block, inplanes, stage_planes, count, stride))
            inplanes = stage_planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(inplanes, num_classes, dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, C0, H, W); H = W = image_size for the 3x3 stem, about half for 7x7
        x = self.stages(x)  # (B, 512 * width * expansion, H/8, W/8)
        return self.head(x)  # (B, num_classes)


def _make_stage(block: Block, inplanes: int, planes: int, count: int, stride: int) -> nn.Sequential:
    """`count` blocks; the first changes stride/channels, with a 1x1 conv + BN on its shortcut."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(count - 1)]
    return nn.Sequential(*layers)


def resnet_builder(name: str, block: Block, depths: tuple[int, ...]) -> Callable[..., ResNet]:
    """A registry builder for one depth variant; its signature declares the family's options."""

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
    ) -> ResNet:
        return ResNet(
            block,
            blocks_per_stage,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            stem_kernel=stem_kernel,
            stem_bn=stem_bn,
            dropout=dropout,
            width=width,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name}: {block.__name__} x {list(depths)} blocks per stage, CIFAR stem."
    return builder


for _name, (_block, _depths) in RESNET_DEPTHS.items():
    register_model(_name)(resnet_builder(_name, _block, _depths))
