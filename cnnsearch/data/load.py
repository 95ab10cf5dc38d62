"""load_dataset: find a data set, then take its tensors from the cache or decode them once and cache them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from . import cache
from .paths import default_data_dir
from .sources import BUILTIN_NAMES, IMAGEFOLDER_PREFIX, Decoded, Source, locate
from .types import DataError, Dataset, ImageSplit

_STATS_CHUNK = 1024  # images per float64 chunk in channel_stats: 1024 x 3 x 32 x 32 x 8 B = 25 MB


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load data set `name` ("cifar10", "cifar100", "mnist" or "imagefolder:PATH") as uint8 tensors on the CPU.

    The built-in data sets are looked for under `data_dir` (default: default_data_dir()) and downloaded there
    through torchvision when missing and `download` is set. The first load decodes the files and caches the
    tensors beside the data (or in the user cache folder when the data folder is read-only); later loads read
    the cache (about 0.7-1 s for CIFAR-10 on a 2-core machine). `progress` prints download bars and a line per
    decode to stderr. Raises DataError with a one-line message when the data cannot be found or read.
    """
    source = locate(name, _root(name, data_dir), download=download, progress=progress)
    key = cache.source_key(source.fingerprint, source.layout)
    places = cache.cache_files(source.root, source.layout)
    for place in places:
        hit = cache.read(place, key)
        if hit is not None:
            return _from_cache(source, *hit)
    return _decode_and_cache(source, key, places, progress)


def find_dataset(name: str, *, data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """Where `load_dataset` would find data set `name`, without decoding or downloading it: one line
    for `python -m tune.run --dry-run`. Raises DataError (one line) when the data set is unknown, or
    missing while `download` is off."""
    root = _root(name, data_dir)
    try:
        source = locate(name, root, download=False, progress=False)
    except DataError:
        if not download or name.strip().lower() not in BUILTIN_NAMES:
            raise
        return f"{name} is not in {root} yet: the run downloads it there first"
    return f"{source.name} found in {source.root} ({source.layout})"


def _root(name: str, data_dir: str | os.PathLike | None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return default_data_dir(unpack=not name.strip().startswith(IMAGEFOLDER_PREFIX))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of (N, C, H, W) uint8 images, in [0, 1] units.

    Sums run in float64: every partial sum is an integer below 2**53, so they are exact.
    """
    total = torch.zeros(images.shape[1], dtype=torch.float64)  # (C,) sum of pixel values
    total_sq = torch.zeros_like(total)  # (C,) sum of squared pixel values
    for chunk in images.split(_STATS_CHUNK):
        x = chunk.to(torch.float64)  # (B, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def _decode_and_cache(source: Source, key: str, places: list[Path], progress: bool) -> Dataset:
    started = time.perf_counter()
    _say(progress, f"decoding {source.name} from {source.root} ...")
    decoded: Decoded = source.decode()
    mean, std = channel_stats(decoded.train.images)
    dataset = Dataset(source.name, decoded.train, decoded.test, decoded.classes, mean, std, decoded.default_augment)
    tensors = {
        "train_images": decoded.train.images,
        "train_labels": decoded.train.labels,
        "test_images": decoded.test.images,
        "test_labels": decoded.test.labels,
    }
    meta = {"classes": list(decoded.classes), "mean": mean, "std": std, "default_augment": decoded.default_augment}
    written = cache.write(places, key, tensors, meta)
    seconds = time.perf_counter() - started
    where = f"; cached at {written}" if written else ""
    _say(progress, f"decoded {len(dataset.train)} + {len(dataset.test)} images in {seconds:.1f} s{where}")
    return dataset


def _from_cache(source: Source, tensors: dict[str, torch.Tensor], meta: dict) -> Dataset:
    return Dataset(
        source.name,
        ImageSplit(tensors["train_images"], tensors["train_labels"]),
        ImageSplit(tensors["test_images"], tensors["test_labels"]),
        tuple(meta["classes"]),
        tuple(meta["mean"]),
        tuple(meta["std"]),
        bool(meta["default_augment"]),
    )


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(f"cnnsearch: {message}", file=sys.stderr, flush=True)
