"""Trials fused into one network (`cnnsearch.fused.fit_seeds`) against the same seeds trained alone, on the CPU.

    python bench/fused_cpu.py [--data-dir DIR]

For each recipe: the largest |difference| of the per-epoch train and validation losses (2 epochs, seeds 0-2)
between the fused run and `fit` per seed, beside the same figure for `fit` with 1 thread against 2 threads:
the rounding noise any change of kernels gives. Also the wall time of the fused run and of the three lone
runs. Not a test: figures go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import time

import torch

from cnnsearch.config import TrainConfig
from cnnsearch.data import load_dataset
from cnnsearch.engine import fit
from cnnsearch.fused import fit_seeds

SEEDS = (0, 1, 2)
RECIPES = {
    "Base CNN, SGD (200 images)": dict(model="basecnn", train_subset=20, batch_size=50, optimizer="sgd", lr=0.01),
    "Base CNN, Adam (200 images)": dict(model="basecnn", train_subset=20, batch_size=50, optimizer="adam", lr=1e-3),
    "ResNet-18 w0.25, SGD lr 0.05": dict(model="resnet18", width=0.25, train_subset=30, batch_size=64,
                                         optimizer="sgd", lr=0.05),
    "ResNet-18 w0.25, SGD lr 0.005": dict(model="resnet18", width=0.25, train_subset=30, batch_size=64,
                                          optimizer="sgd", lr=0.005),
    "ResNet-18 w0.25, Adam lr 1e-3": dict(model="resnet18", width=0.25, train_subset=30, batch_size=64,
                                          optimizer="adam", lr=1e-3),
}


def gap(a, b) -> float:
    return max(abs(x[k] - y[k]) for r, q in zip(a, b) for x, y in zip(r.history, q.history)
               for k in ("train_loss", "val_loss"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    args = p.parse_args()
    data = load_dataset("cifar10", data_dir=args.data_dir, download=False, progress=False)
    print(f"torch {torch.__version__}; seeds {SEEDS}, 2 epochs, 200 validation images")
    print("| recipe | fused vs alone | alone, 1 vs 2 threads | fused s | alone s (3 runs) |")
    print("|---|---:|---:|---:|---:|")
    for name, recipe in RECIPES.items():
        config = TrainConfig(dataset="cifar10", val_size=200, epochs=2, device="cpu", dropout=0.0, **recipe)
        torch.set_num_threads(2)
        start = time.perf_counter()
        fused = fit_seeds(config, SEEDS, data)
        fused_s = time.perf_counter() - start
        start = time.perf_counter()
        alone = [fit(config.replace(seed=seed), data) for seed in SEEDS]
        alone_s = time.perf_counter() - start
        torch.set_num_threads(1)
        one_thread = [fit(config.replace(seed=seed), data) for seed in SEEDS]
        print(f"| {name} | {gap(fused, alone):.2g} | {gap(one_thread, alone):.2g} | {fused_s:.1f} | {alone_s:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
