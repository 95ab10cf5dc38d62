"""Input-pipeline throughput on the real CIFAR-10 training set: the reports' DataLoader against ours.

Reports' pipeline: a torchvision DataLoader (batch 64, shuffled, 2 workers) applying RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize to one PIL image at a time, over either
  * jpeg-folder: ImageFolder over the JPEG files (read and decode every image, every epoch), or
  * pil-memory: the pixels decoded once into a (N, 32, 32, 3) uint8 array, Image.fromarray per item, which is
    exactly what torchvision.datasets.CIFAR10 does.
Ours: the uint8 tensors in memory, iterate_batches with Augment (batch 64), then conversion to normalised float,
run in the main process with 1 torch thread and with torch's default (one per core).

Every pipeline yields the same thing: (64, 3, 32, 32) float32 normalised images and (64,) int64 labels. Each is
timed over a fixed number of batches after a warm-up (worker start-up excluded), several times, interleaved; the
table gives the median and range in images per second. About 2-4 minutes on a 2-core machine.

    python bench/input_pipeline.py [--data-dir DIR] [--batches 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnsearch.data import Augment, Dataset, iterate_batches, load_dataset  # noqa: E402

BATCH_SIZE = 64
JPEG = "reports: ImageFolder over JPEG files"
PIL = "reports: in-memory PIL (CIFAR10-style)"


class InMemoryPIL(torch.utils.data.Dataset):
    """torchvision's CIFAR10 __getitem__: an HWC uint8 array, Image.fromarray per item, then the transform."""

    def __init__(self, data: np.ndarray, targets: list[int], transform: Callable) -> None:
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def reports_transform(dataset: Dataset) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(dataset.mean, dataset.std),
        ]
    )


def reports_loader(source: torch.utils.data.Dataset, workers: int) -> Callable[[], Iterator]:
    def epoch() -> Iterator:
        return iter(DataLoader(source, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers))

    return epoch


def ours(dataset: Dataset, threads: int) -> Callable[[], Iterator]:
    split = dataset.train
    # (x / 255 - mean) / std as one multiply and one add: scale and shift are (1, C, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    scale = 1 / (255 * std)
    shift = -torch.tensor(dataset.mean).view(1, -1, 1, 1) / std
    generator = torch.Generator().manual_seed(0)
    augment = Augment(crop_padding=4, flip=True)

    def epoch() -> Iterator:
        torch.set_num_threads(threads)
        for images, labels in iterate_batches(split, BATCH_SIZE, shuffle=True, generator=generator, augment=augment):
            yield images.float().mul_(scale).add_(shift), labels  # (B, C, H, W) float32

    return epoch


def throughput(epoch: Callable[[], Iterator], batches: int, warmup: int) -> float:
    """Images per second over `batches` batches, after `warmup` batches (and the loader's start-up)."""
    it = epoch()
    for _ in range(warmup):
        next(it)
    seen = 0
    started = time.perf_counter()
    for _ in range(batches):
        try:
            images, _ = next(it)
        except StopIteration:  # fast pipelines run past an epoch: start the next, as training would
            it = epoch()
            images, _ = next(it)
        seen += len(images)
    rate = seen / (time.perf_counter() - started)
    del it  # stops DataLoader workers
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="data root holding cifar10-jpeg/ (default: $CNNSEARCH_DATA_DIR)")
    parser.add_argument("--batches", type=int, default=300, help="timed batches of 64 per measurement")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches before each measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per pipeline")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the reports' pipeline")
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = load_dataset("cifar10", data_dir=args.data_dir, download=False)
    print(f"load_dataset('cifar10'): {time.perf_counter() - started:.2f} s; {len(dataset.train)} train images")
    root = Path(args.data_dir) if args.data_dir else Path(os.environ.get("CNNSEARCH_DATA_DIR", ".data"))
    jpeg_train = root / "cifar10-jpeg" / "train"
    if not jpeg_train.is_dir():
        sys.exit(f"input_pipeline: {jpeg_train} not found; unpack it with ../shared/data/unpack.sh DIR")

    transform = reports_transform(dataset)
    hwc = dataset.train.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) uint8, as CIFAR10.data
    jpeg_folder = datasets.ImageFolder(jpeg_train, transform)
    in_memory = InMemoryPIL(hwc, dataset.train.labels.tolist(), transform)
    default_threads = torch.get_num_threads()
    epoch_batches = -(-len(dataset.train) // BATCH_SIZE)
    # name -> (epoch factory, timed batches); ours is timed over a whole epoch: at its speed 300 batches is ~0.3 s
    pipelines = {
        JPEG: (reports_loader(jpeg_folder, args.workers), args.batches),
        PIL: (reports_loader(in_memory, args.workers), args.batches),
        "ours, 1 torch thread": (ours(dataset, 1), epoch_batches),
        f"ours, {default_threads} torch threads": (ours(dataset, default_threads), epoch_batches),
    }
    print(
        f"batch {BATCH_SIZE}, reports timed over {args.batches} batches and ours over an epoch ({epoch_batches}), "
        f"each after {args.warmup} warm-up batches; {args.repeats} repeats, interleaved; {args.workers} DataLoader "
        f"workers; {os.cpu_count()} CPUs; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every pipeline alike
        for name, (epoch, batches) in pipelines.items():
            rates[name].append(throughput(epoch, batches, args.warmup))
    torch.set_num_threads(default_threads)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    print("\n| pipeline | images/s (median) | range | x JPEG folder | x in-memory PIL |\n|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        ratios = f"{medians[name] / medians[JPEG]:.1f} | {medians[name] / medians[PIL]:.1f}"
        print(f"| {name} | {medians[name]:,.0f} | {min(values):,.0f}-{max(values):,.0f} | {ratios} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
