"""split_train_val (and split_sizes): a seeded, stratified validation split and training subset carved from the official train split."""

from __future__ import annotations

import torch

from .types import Dataset, ImageSplit


def split_train_val(
    dataset: Dataset,
    *,
    val_size: int = 5000,
    seed: int = 0,
    train_subset: int | None = None,
) -> tuple[ImageSplit, ImageSplit]:
    """Split dataset.train into (train, val); dataset.test is never touched.

    val takes `val_size` images with the classes as equal as possible; train takes the rest, or
    `train_subset` images per class of the rest. Each class's images are shuffled once with a generator seeded by
    `seed` (the global RNG is not used), val takes the first ones and train the next, so the same arguments give
    the same splits, val does not depend on `train_subset`, and a smaller subset is contained in a larger one.
    Both splits keep the original order and the device of dataset.train.
    """
    train_idx, val_idx = _split_indices(dataset, val_size=val_size, seed=seed, train_subset=train_subset)
    return _take(dataset.train, train_idx), _take(dataset.train, val_idx)


def split_sizes(dataset: Dataset, *, val_size: int = 5000, seed: int = 0,
                train_subset: int | None = None) -> tuple[int, int]:
    """(training images, validation images) that `split_train_val` with these arguments gives, without
    copying any image."""
    train_idx, val_idx = _split_indices(dataset, val_size=val_size, seed=seed, train_subset=train_subset)
    return len(train_idx), len(val_idx)


def _split_indices(dataset: Dataset, *, val_size: int, seed: int,
                   train_subset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if not _is_count(val_size, minimum=0):
        raise ValueError(f"val_size must be a whole number of images >= 0, got {val_size!r}")
    if train_subset is not None and not _is_count(train_subset, minimum=1):
        raise ValueError(f"train_subset must be a number of images per class >= 1 (None: all), got {train_subset!r}")

    labels = dataset.train.labels.cpu()  # (N,)
    generator = torch.Generator().manual_seed(seed)
    # per class: that class's indices into dataset.train, in a seeded random order
    by_class = [_shuffled(torch.nonzero(labels == c).flatten(), generator) for c in range(dataset.num_classes)]
    counts = [len(idx) for idx in by_class]
    # Every class with images keeps at least one for training.
    capacity = [max(n - 1, 0) for n in counts]
    if val_size > sum(capacity):
        raise ValueError(
            f"val_size={val_size} is too large: {dataset.name} has {len(labels)} training images and at most "
            f"{sum(capacity)} can go to validation (one per class stays for training)"
        )
    val_counts = _equal_shares(val_size, capacity, torch.randperm(len(counts), generator=generator).tolist())

    train_counts = [n - v for n, v in zip(counts, val_counts)]
    if train_subset is not None:
        short = [c for c, (n, left) in enumerate(zip(counts, train_counts)) if n and left < train_subset]
        if short:
            c = short[0]
            raise ValueError(
                f"train_subset={train_subset} per class is too large: class {dataset.classes[c]!r} has only "
                f"{train_counts[c]} training images left after the validation split"
            )
        train_counts = [min(left, train_subset) for left in train_counts]

    val_idx = torch.cat([idx[:v] for idx, v in zip(by_class, val_counts)])
    train_idx = torch.cat([idx[v : v + t] for idx, v, t in zip(by_class, val_counts, train_counts)])
    return train_idx, val_idx


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _shuffled(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return indices[torch.randperm(len(indices), generator=generator)]


def _equal_shares(total: int, capacity: list[int], order: list[int]) -> list[int]:
    """Share `total` among classes as equally as their `capacity` allows (water-filling).

    When the total does not divide evenly, the classes earliest in `order` (a seeded random order) get one more.
    Requires total <= sum(capacity).
    """
    shares = [0] * len(capacity)
    remaining = total
    open_ = [c for c in order if capacity[c] > 0]
    while remaining > 0:
        each = remaining // len(open_)
        if each == 0:
            for c in open_[:remaining]:
                shares[c] += 1
            break
        for c in open_:
            take = min(each, capacity[c] - shares[c])
            shares[c] += take
            remaining -= take
        open_ = [c for c in open_ if shares[c] < capacity[c]]
    return shares


def _take(split: ImageSplit, indices: torch.Tensor) -> ImageSplit:
    indices = indices.sort().values.to(split.device)  # original order: contiguous reads, class-interleaved
    return ImageSplit(split.images[indices], split.labels[indices])
