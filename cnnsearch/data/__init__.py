"""Data sets as uint8 tensors in memory: loading (with a decoded-tensor cache), splits, augmentation, batches.

    dataset = load_dataset("cifar10")                       # Dataset: train/test ImageSplits, classes, mean/std
    train, val = split_train_val(dataset, val_size=5000)    # stratified, seeded
    for images, labels in iterate_batches(train, 512, shuffle=True, generator=g, augment=Augment()):
        ...                                                 # (B, C, H, W) uint8, (B,) int64
"""

from __future__ import annotations

from .augment import Augment
from .batches import iterate_batches
from .load import find_dataset, load_dataset
from .paths import default_data_dir
from .splits import split_train_val
from .types import DataError, Dataset, ImageSplit

__all__ = [
    "Augment",
    "DataError",
    "Dataset",
    "ImageSplit",
    "default_data_dir",
    "find_dataset",
    "iterate_batches",
    "load_dataset",
    "split_train_val",
]
