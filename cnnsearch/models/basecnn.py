"""The course's "CNN Base" and LeNet-5: two 5x5 convs with max-pooling, then three Linear layers.

Unlike the other families these flatten a fixed-size feature map (as the reports did), so the first
Linear layer is sized from `image_size`: 16*5*5 = 400 inputs for the Base CNN on 32x32 and for
LeNet-5 on 28x28. They keep PyTorch's default init, which is what the reports trained.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from .layers import ModelArgs, conv_out_size, scale_channels
from .registry import variant

__all__ = ["BaseCNN", "basecnn", "lenet5"]


def _flat_side(image_size: int, first_padding: int) -> int:
    """Side of the last feature map, in pixels: 5x5 conv -> 2x2 pool -> 5x5 conv -> 2x2 pool."""
    side = conv_out_size(image_size, 5, padding=first_padding) // 2
    return conv_out_size(side, 5) // 2


class BaseCNN(nn.Module):
    """conv5(6) -> ReLU -> pool2 -> conv5(16) -> ReLU -> pool2 -> FC 120 -> ReLU -> FC 84 -> ReLU -> FC.

    `first_padding` is 0 for the Base CNN and 2 for LeNet-5 (its "same" first conv on MNIST).
    `width` scales the channel and hidden widths (6, 16, 120, 84).
    """

    options = ("dropout", "width")  # of ModelArgs' options: no stem or stages to vary

    def __init__(self, *, first_padding: int = 0, **arguments: Any) -> None:
        super().__init__()
        a = ModelArgs.check(type(self), arguments)
        side = _flat_side(a.image_size, first_padding)
        if side < 1:
            smallest = next(n for n in range(1, 64) if _flat_side(n, first_padding) >= 1)
            raise ValueError(
                f"image_size must be >= {smallest} for two 5x5 convs and two 2x2 max-pools, got {a.image_size}"
            )
        c1, c2 = scale_channels(6, a.width), scale_channels(16, a.width)
        h1, h2 = scale_channels(120, a.width), scale_channels(84, a.width)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(a.in_channels, c1, kernel_size=5, padding=first_padding),
                relu1=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(c1, c2, kernel_size=5),
                relu2=nn.ReLU(inplace=True),
                pool2=nn.MaxPool2d(2),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(1),  # (B, c2, side, side) -> (B, c2*side*side)
                fc1=nn.Linear(c2 * side * side, h1),
                relu1=nn.ReLU(inplace=True),
                fc2=nn.Linear(h1, h2),
                relu2=nn.ReLU(inplace=True),
                dropout=nn.Dropout(a.dropout) if a.dropout > 0 else nn.Identity(),
                fc3=nn.Linear(h2, a.num_classes),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


basecnn = variant("basecnn", BaseCNN, first_padding=0)  # the course's Base CNN: Conv2d(in, 6, 5), no padding
lenet5 = variant("lenet5", BaseCNN, first_padding=2)  # LeNet-5 as report C built it for MNIST: Conv2d(in, 6, 5, padding=2)
