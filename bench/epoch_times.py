"""Training and validation speed of every model shape the shipped spaces' `smoke` and `cpu` budgets train, on this CPU.

    python bench/epoch_times.py --data-dir DIR [--repeats 3] [--write search_spaces/speeds.json]

`python -m tune.run --dry-run` turns these figures into an estimated run time (search_spaces/estimate.py). For
each distinct speed-relevant shape (model, width, batch size, stem kernel, blocks per stage) of a
shipped space at budgets `smoke` and `cpu` (every level of a grid or one-at-a-time factor, every choice of a
sampled one), `fit` trains a warm-up epoch and `--repeats` timed epochs of 600 images on real CIFAR-10
with one torch thread (what a trial gets from `--cpus-per-trial 1`), validating on 1,000; the fastest
training and validation images/s are recorded.
The GPU rows of search_spaces/speeds.json are copied by hand from bench/RESULTS.md (GPU speed, one H100) and
kept when this script rewrites the file. Not a test: figures go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cnnsearch.config import TrainConfig
from cnnsearch.data import load_dataset
from cnnsearch.engine import fit
from search_spaces import list_spaces, load_space
from search_spaces.estimate import _trial_configs, speed_shape
from search_spaces.plan import Plan

TIMED_PER_CLASS = 60  # training images per class in the timed epoch: 600 images, a few seconds per shape
TIMED_VAL = 1000


def shapes(budget: str = "cpu") -> list[dict]:
    """The distinct speed-relevant shapes the shipped spaces train at `budget`."""
    seen, out = set(), []
    for name in list_spaces():
        for configs, _ in _trial_configs(Plan(load_space(name), budget)):
            for config in configs:
                shape = speed_shape(config)
                key = json.dumps(shape, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    out.append(shape)
    return out


def measure(shape: dict, data, repeats: int) -> dict:
    """The fastest of `repeats` timed epochs (each after a warm-up epoch): on a shared machine the
    slower ones measure the other jobs."""
    config = TrainConfig.from_dict({**shape, "dataset": "cifar10", "epochs": 1 + repeats,
                                    "train_subset": TIMED_PER_CLASS, "val_size": TIMED_VAL, "device": "cpu",
                                    "optimizer": "adam", "lr": 1e-3})
    timed = fit(config, data).history[1:]
    train = max(h["images_per_s"] for h in timed)
    val_s = min(h["epoch_time_s"] - TIMED_PER_CLASS * data.num_classes / h["images_per_s"] for h in timed)
    return {**shape, "train_images_per_s": round(train, 1), "eval_images_per_s": round(TIMED_VAL / max(val_s, 1e-6), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--write", metavar="JSON", help="rewrite this speeds file's CPU rows (keeps its GPU rows)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per shape; the fastest counts")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("cifar10", data_dir=args.data_dir, download=False, progress=False)
    rows = []
    for shape in [*shapes("smoke"), *shapes("cpu")]:
        started = time.perf_counter()
        row = measure(shape, data, args.repeats)
        rows.append(row)
        print(json.dumps(row), f"({time.perf_counter() - started:.0f} s)", flush=True)
    if args.write:
        path = Path(args.write)
        old = json.loads(path.read_text()) if path.exists() else {}
        table = {
            "cpu": {"source": "this project's 2-core CPU machine, 1 torch thread per trial (bench/RESULTS.md, "
                              "Epoch times)",
                    "rows": rows},
            **{k: v for k, v in old.items() if k != "cpu"},
        }
        path.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
