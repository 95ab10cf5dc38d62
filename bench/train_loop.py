"""Training-loop overhead: images/s of `cnnsearch.fit` against a bare forward/backward/step loop.

    python bench/train_loop.py [--data-dir DIR] [--width 0.25] [--batch-size 128] [--images 2560] [--epochs 3]

Same model (ResNet-18 at the given width), batch size, optimizer and number of images. The bare loop
feeds one pre-made float batch over and over (no shuffling, augmentation, normalisation or metrics);
`fit` does all of those. Rounds alternate between the two so machine noise hits both alike; the
median images/s of each is compared. Not a test: figures go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cnnsearch.config import TrainConfig
from cnnsearch.data import load_dataset
from cnnsearch.engine import build_classifier, fit


def bare_loop(config: TrainConfig, data, images: int) -> float:
    """images/s of forward/backward/step on a fixed batch already on the device, normalised floats."""
    torch.manual_seed(0)
    model = build_classifier(config, data).net  # the network alone, no normalisation wrapper
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x = torch.randn(config.batch_size, data.in_channels, data.image_size, data.image_size)  # (B, C, H, W)
    y = torch.randint(0, data.num_classes, (config.batch_size,))
    steps = images // config.batch_size
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * config.batch_size / (time.perf_counter() - start)


def fit_loop(config: TrainConfig, data) -> float:
    """Training images/s that `fit` reports, median over epochs after the first (warm-up)."""
    history = fit(config, data).history
    return statistics.median(h["images_per_s"] for h in history[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=2560, help="training images per epoch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    data = load_dataset("cifar10", data_dir=args.data_dir, download=False)
    config = TrainConfig(model="resnet18", width=args.width, batch_size=args.batch_size, epochs=args.epochs,
                         train_subset=args.images // data.num_classes, val_size=500, device="cpu")
    print(f"ResNet-18 width {args.width}, batch {args.batch_size}, {args.images} images/epoch, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(bare_loop(config, data, args.images))
        ours.append(fit_loop(config, data))
        print(f"round {r + 1}: bare {bare[-1]:.0f} img/s, fit {ours[-1]:.0f} img/s")
    b, f = statistics.median(bare), statistics.median(ours)
    print(f"median: bare loop {b:.0f} img/s, fit {f:.0f} img/s; fit/bare = {f / b:.3f} "
          f"({100 * (1 - f / b):.1f}% overhead)")


if __name__ == "__main__":
    main()
