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

from .registry import register_model
from .resnet import RESNET_DEPTHS, resnet_builder

__all__ = ["SE_REDUCTION", "SEBasicBlock", "SEBottleneck"]

SE_REDUCTION = 16


def _squeeze_excitation(channels: int) -> SqueezeExcitation:
    return SqueezeExcitation(channels, max(1, channels // SE_REDUCTION))


class SEBasicBlock(BasicBlock):
    """BasicBlock whose residual branch is rescaled by SE before the addition."""

    def __init__(self, inplanes: int, planes: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = _squeeze_excitation(planes * self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.se(out)  # (B, C, H, W) scaled per channel by weights in (0, 1)
        return self.relu(out + identity)


class SEBottleneck(Bottleneck):
    """Bottleneck whose residual branch is rescaled by SE before the addition."""

    def __init__(self, inplanes: int, planes: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = _squeeze_excitation(planes * self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.se(out)
        return self.relu(out + identity)


_SE_BLOCKS = {BasicBlock: SEBasicBlock, Bottleneck: SEBottleneck}

for _name, (_block, _depths) in RESNET_DEPTHS.items():
    register_model(f"se_{_name}")(resnet_builder(f"se_{_name}", _SE_BLOCKS[_block], _depths))
