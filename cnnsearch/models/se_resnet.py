"""SE-ResNet (Hu et al. 2018): ResNet with Squeeze-and-Excitation (reduction 16) on every block.

The SE module (torchvision.ops.SqueezeExcitation: global average pool -> 1x1 conv -> ReLU -> 1x1
conv -> sigmoid -> channel scale) rescales the residual branch before it is added to the shortcut,
as in the paper's Fig. 3. The blocks subclass torchvision's, so everything else matches ResNet.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import SqueezeExcitation

from .registry import model_options, variant
from .resnet import ResNet

__all__ = ["SE_REDUCTION", "SEBasicBlock", "SEBottleneck", "se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101",
           "se_resnet152"]

SE_REDUCTION = 16


class _SqueezeExcited:
    """Mixin for a torchvision residual block: SE on the residual branch (`residual`), before the addition."""

    def __init__(self, inplanes: int, planes: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        channels = planes * self.expansion
        self.se = SqueezeExcitation(channels, max(1, channels // SE_REDUCTION))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.se(self.residual(x))  # (B, C, H, W) scaled per channel by weights in (0, 1)
        return self.relu(out + identity)


class SEBasicBlock(_SqueezeExcited, BasicBlock):
    """BasicBlock whose residual branch is rescaled by SE before the addition."""

    def residual(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class SEBottleneck(_SqueezeExcited, Bottleneck):
    """Bottleneck whose residual branch is rescaled by SE before the addition."""

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def _depths(resnet: str) -> object:
    return model_options(resnet)["blocks_per_stage"]


# ResNet's depth tables, SE blocks.
se_resnet18 = variant("se_resnet18", ResNet, SEBasicBlock, blocks_per_stage=_depths("resnet18"))
se_resnet34 = variant("se_resnet34", ResNet, SEBasicBlock, blocks_per_stage=_depths("resnet34"))
se_resnet50 = variant("se_resnet50", ResNet, SEBottleneck, blocks_per_stage=_depths("resnet50"))
se_resnet101 = variant("se_resnet101", ResNet, SEBottleneck, blocks_per_stage=_depths("resnet101"))
se_resnet152 = variant("se_resnet152", ResNet, SEBottleneck, blocks_per_stage=_depths("resnet152"))
