"""The value types every other data module passes around: an image split, a data set, the error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class DataError(Exception):
    """A data set cannot be found, read or decoded.

    The message is one line meant for the user: the CLI prints it and exits with status 2.
    """


class Geometry(NamedTuple):
    """What a model needs to know of a data set's images: it is built for them."""

    in_channels: int
    image_size: int  # height = width, in pixels
    num_classes: int


# eq=False: the fields are tensors, and dataclass equality would call bool() on a tensor comparison.
@dataclass(frozen=True, eq=False)
class ImageSplit:
    """Images and their labels, kept together on one device."""

    images: torch.Tensor  # (N, C, H, W) uint8, pixel values 0..255
    labels: torch.Tensor  # (N,) int64 class indices

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageSplit.images must be a (N, C, H, W) uint8 tensor, got {_describe(self.images)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"ImageSplit.labels must be a (N,) int64 tensor, got {_describe(self.labels)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"ImageSplit has {len(self.images)} images but {len(self.labels)} labels")
        if self.images.device != self.labels.device:
            raise ValueError(f"ImageSplit images are on {self.images.device} but labels on {self.labels.device}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSplit:
        """The same split on `device` (self when it is already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A decoded data set: the official train and test splits plus what a model needs to know about them."""

    name: str  # "cifar10", "cifar100", "mnist" or "imagefolder:/abs/path"
    train: ImageSplit  # the full official training split; carve validation from it with split_train_val
    test: ImageSplit
    classes: tuple[str, ...]  # class names; label i is classes[i]
    mean: tuple[float, ...]  # per-channel mean of the train images, in [0, 1] units
    std: tuple[float, ...]  # per-channel standard deviation of the train images, in [0, 1] units
    default_augment: bool  # whether crop+flip augmentation suits this data (True for natural RGB images)

    def __post_init__(self) -> None:
        c, h, w = self.train.images.shape[1:]
        if self.test.images.shape[1:] != self.train.images.shape[1:]:
            raise ValueError(
                f"{self.name}: test images are {tuple(self.test.images.shape[1:])} but train images {(c, h, w)}"
            )
        if h != w:
            raise ValueError(f"{self.name}: images must be square, got H={h}, W={w}")
        if len(self.mean) != c or len(self.std) != c:
            got = f"{len(self.mean)} and {len(self.std)}"
            raise ValueError(f"{self.name}: need {c} means and stds (one per channel), got {got}")
        if not self.classes:
            raise ValueError(f"{self.name}: no classes")
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < len(self.classes):
                raise ValueError(f"{self.name}: {split_name} labels fall outside 0..{len(self.classes) - 1}")

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.in_channels, self.image_size, self.num_classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        """Height (= width) of every image, in pixels."""
        return self.train.images.shape[2]


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
