"""Trials fused into one network (`cnnsearch.fused.fit_seeds`) against the same seeds trained alone, on the CPU.

    python bench/fused_cpu.py [--data-dir DIR] [--only agreement|throughput] [--rounds 2] [--threads 2]

agreement: for each recipe, the largest |difference| of the per-epoch train and validation losses (2 epochs,
seeds 0-2) between the fused run and `fit` per seed, beside the same figure for `fit` with 1 thread against 2
threads: the rounding noise any change of kernels gives. Also the wall time of the fused run and of the three
lone runs.

throughput: training images/s of one seed alone (`fit`) against 2 and 4 seeds as one group, fused and
sequential (`fit_group`), on the ablation space's cpu-budget network (width-0.25 ResNet-18, batch 128, Adam),
2,000 training images, 1 epoch. A group's figure is the sum of its members' `images_per_s` (each member's share
of the group's training time, validation excluded), so it compares with the lone run's directly. Cells run in
interleaved rounds, so the machine's noise hits each alike; the median over rounds is shown.

Not a test: figures go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from cnnsearch.config import TrainConfig
from cnnsearch.data import load_dataset
from cnnsearch.engine import fit, fit_group
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


# The ablation space's cpu budget (search_spaces/ablation.yaml) with 200 images per class: 2,000 per epoch.
THROUGHPUT_RECIPE = dict(model="resnet18", width=0.25, batch_size=128, optimizer="adam", lr=1e-3,
                         lr_schedule="exponential", lr_decay=0.9, train_subset=200, val_size=500, epochs=1,
                         dropout=0.0, dataset="cifar10", device="cpu")
# (label, seeds, fused): None trains the one seed with `fit`.
CELLS = (("1 seed alone (fit)", 1, None), ("2 seeds fused", 2, True), ("2 seeds sequential", 2, False),
         ("4 seeds fused", 4, True), ("4 seeds sequential", 4, False))


def throughput(data, rounds: int) -> None:
    config = TrainConfig(**THROUGHPUT_RECIPE)
    print(f"\nthroughput: {config.model} width {config.width}, batch {config.batch_size}, "
          f"{config.train_subset * data.num_classes} training images, 1 epoch, {torch.get_num_threads()} threads, "
          f"{rounds} interleaved rounds; load average before {os.getloadavg()[0]:.2f}", flush=True)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in CELLS}
    walls: dict[str, list[float]] = {label: [] for label, _, _ in CELLS}
    for _ in range(rounds):
        for label, seeds, fused in CELLS:
            configs = [config.replace(seed=seed) for seed in range(seeds)]
            start = time.perf_counter()
            results = [fit(configs[0], data)] if fused is None else fit_group(configs, data, fused=fused)
            walls[label].append(time.perf_counter() - start)
            rates[label].append(sum(r.history[0]["images_per_s"] for r in results))
            print(f"  {label}: {rates[label][-1]:,.0f} images/s, {walls[label][-1]:.1f} s wall, "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    alone = statistics.median(rates[CELLS[0][0]])
    print("| | training images/s (median) | rounds | vs 1 seed alone | wall s per round (median) |")
    print("|---|---:|---|---:|---:|")
    for label, _, _ in CELLS:
        rate = statistics.median(rates[label])
        print(f"| {label} | {rate:,.0f} | {', '.join(f'{r:,.0f}' for r in rates[label])} | {rate / alone:.2f}x "
              f"| {statistics.median(walls[label]):.1f} |", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--only", choices=("agreement", "throughput"))
    p.add_argument("--rounds", type=int, default=2, help="throughput: interleaved rounds of every cell")
    p.add_argument("--threads", type=int, default=2, help="throughput: torch threads")
    args = p.parse_args()
    data = load_dataset("cifar10", data_dir=args.data_dir, download=False, progress=False)
    if args.only != "agreement":
        torch.set_num_threads(args.threads)
        throughput(data, args.rounds)
    if args.only != "throughput":
        agreement(data)


def agreement(data) -> None:
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
