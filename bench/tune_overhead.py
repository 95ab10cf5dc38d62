"""Tune overhead: one config through the Tune trainable and through `cnnsearch.fit`, side by side.

    python bench/tune_overhead.py [--data-dir DIR] [--epochs 3] [--train-subset 300] [--trials 3]

1. Wall time of the training itself: `fit` called directly vs the same config as a Tune trial (its
   time from being scheduled to its last report). Goal: ratio <= 1.15 for a one-minute trial.
2. Trial start: from Tune scheduling the trial (a driver-side callback) to its first batch (the
   trainable's entry time plus fit's `setup_s`), with the data set shared through the object store.
   The first trial pays for a new worker process (imports); later ones reuse it. Goal: under 2 s.
Both run with 2 CPUs for one trial at a time, so the direct run and the trial have the same cores.
"""
from __future__ import annotations

import argparse
import statistics
import time

import ray
from ray import tune as ray_tune

from cnnsearch.config import TrainConfig
from cnnsearch.data import load_dataset
from cnnsearch.engine import fit
from tune.trainable import train_group


class StartTimes(ray_tune.Callback):
    """When Tune scheduled each trial, on the driver's clock (same machine as the trial)."""

    def __init__(self) -> None:
        self.scheduled: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.scheduled[trial.trial_id] = time.time()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=300, help="images per class")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--storage", default="/tmp/cnnsearch-bench-tune")
    args = p.parse_args()

    data = load_dataset("cifar10", data_dir=args.data_dir, download=False)
    config = TrainConfig(model="resnet18", width=0.25, batch_size=128, epochs=args.epochs,
                         train_subset=args.train_subset, val_size=1000, device="cpu")
    params = config.to_dict()

    import torch

    torch.set_num_threads(2)
    start = time.perf_counter()
    direct = fit(config, data)
    direct_s = time.perf_counter() - start
    print(f"direct fit: {direct_s:.1f} s ({args.epochs} epochs, last val acc {direct.history[-1]['val_acc']:.4f})")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    callback = StartTimes()
    name = f"overhead-{int(time.time())}"
    del params["seed"]
    tuner = ray_tune.Tuner(  # a trial per seed: each trial trains one seed, as the direct run does
        ray_tune.with_resources(ray_tune.with_parameters(train_group, data=data, storage=args.storage, name=name),
                                {"cpu": 2}),
        param_space={**params, "seeds": ray_tune.grid_search([[s] for s in range(args.trials)])},
        tune_config=ray_tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=1, reuse_actors=True),
        run_config=ray_tune.RunConfig(name=name, storage_path=args.storage,
                                      callbacks=[callback], verbose=0),
    )
    results = tuner.fit()
    rows = []
    for result in results:
        df = result.metrics_dataframe
        scheduled = callback.scheduled[result.metrics["trial_id"]]
        first_batch = df["started_at"].iloc[0] + df["setup_s"].iloc[0]
        wall = df["timestamp"].iloc[-1] - scheduled
        rows.append((int(result.config["seed"]), first_batch - scheduled, wall, df["val_acc"].iloc[-1]))
    rows.sort()
    for seed, start_s, wall, acc in rows:
        print(f"trial seed={seed}: scheduled->first batch {start_s:.2f} s, scheduled->last report {wall:.1f} s "
              f"(ratio to direct {wall / direct_s:.3f}), val acc {acc:.4f}")
    later = [r[2] for r in rows[1:]] or [rows[0][2]]
    print(f"median trial wall / direct fit (reused workers): {statistics.median(later) / direct_s:.3f}; "
          f"first-batch latency: first trial {rows[0][1]:.2f} s, later trials median "
          f"{statistics.median(r[1] for r in rows[1:]) if len(rows) > 1 else float('nan'):.2f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
