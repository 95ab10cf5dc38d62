"""ResNet for CIFAR-size images (He et al. 2016), built on torchvision's BasicBlock and Bottleneck.

Differences from torchvision's ImageNet ResNet, as in kuangliu/pytorch-cifar: the stem is a 3x3
stride-1 conv with no max-pool (or 7x7 stride 2, still no max-pool, for report E's ablation), and
the stage widths scale with `width`. Stages have strides 1, 2, 2, 2; the head is global average
pool -> (dropout) -> Linear. CIFAR ResNet-18 at width 1 has 11,173,962 parameters for 10 classes.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from .layers import ClassifierHead, ModelArgs, init_weights, make_stem, scale_channels
from .registry import variant

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

Block = type[BasicBlock] | type[Bottleneck]

_STAGE_PLANES = (64, 128, 256, 512)  # planes per stage at width 1; a block outputs planes * expansion
_STAGE_STRIDES = (1, 2, 2, 2)


class ResNet(nn.Module):
    """stem -> 4 stages of residual blocks -> global average pool -> (dropout) -> Linear.

    `block` is any BasicBlock/Bottleneck-compatible class (same constructor, `expansion`
    attribute), which is how SE-ResNet reuses this class. `arguments` are `ModelArgs`, with
    `blocks_per_stage` required. `image_size` is only checked: global average pooling makes the
    network size-agnostic.
    """

    def __init__(self, block: Block, **arguments: Any) -> None:
        super().__init__()
        a = ModelArgs.check(type(self), arguments, num_stages=len(_STAGE_PLANES))
        planes = [scale_channels(p, a.width) for p in _STAGE_PLANES]
        self.stem = make_stem(a.in_channels, planes[0], kernel=a.stem_kernel, bn=a.stem_bn)
        inplanes = planes[0]
        stages = []
        for stage_planes, count, stride in zip(planes, a.blocks_per_stage, _STAGE_STRIDES):
            stages.append(_make_stage(block, inplanes, stage_planes, count, stride))
            inplanes = stage_planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(inplanes, a.num_classes, a.dropout)
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


# Depths: He et al. 2016, Table 1.
resnet18 = variant("resnet18", ResNet, BasicBlock, blocks_per_stage=(2, 2, 2, 2))
resnet34 = variant("resnet34", ResNet, BasicBlock, blocks_per_stage=(3, 4, 6, 3))
resnet50 = variant("resnet50", ResNet, Bottleneck, blocks_per_stage=(3, 4, 6, 3))
resnet101 = variant("resnet101", ResNet, Bottleneck, blocks_per_stage=(3, 4, 23, 3))
resnet152 = variant("resnet152", ResNet, Bottleneck, blocks_per_stage=(3, 8, 36, 3))
