"""How long a plan will take, from measured training and validation speeds (tune/speeds.json).

The CPU rows come from `python bench/epoch_times.py --write search_spaces/speeds.json` on the project's 2-core
machine (one torch thread per trial); the GPU rows from bench/RESULTS.md (GPU speed), one H100. A
trial's epoch is its training images over the training speed of its shape plus its validation images
over the validation speed; trials fill the slots the cluster has, in order. Ray-free.
"""
from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .space import set_factor

__all__ = ["Estimate", "estimate", "estimate_line", "concurrency", "speed_shape"]

SPEEDS_FILE = Path(__file__).with_name("speeds.json")
SPEED_KEYS = ("model", "width", "batch_size", "stem_kernel", "blocks_per_stage")
# Built-in data sets: (training images, classes, image side), so nothing is loaded to estimate.
SIZES = {"cifar10": (50_000, 10, 32), "cifar100": (50_000, 100, 32), "mnist": (60_000, 10, 28)}
MEASURED_SIDE = 32  # the speeds were measured on CIFAR-10's 32x32 images
# Ray's start (about 10 s with the dashboard), the first worker's imports (about 6 s) and the data
# load from its cache (about 1 s): bench/RESULTS.md, Tune overhead.
EXPERIMENT_OVERHEAD_S = 20.0
TRIAL_OVERHEAD_S = 1.0  # scheduled -> first batch (0.4-0.5 s) and the last report


def speed_shape(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a flat TrainConfig dict that set its speed, with the model family's defaults filled
    in (so `stem_kernel: null` and `stem_kernel: 3` are one shape for a ResNet)."""
    from cnnsearch.config import TrainConfig
    from cnnsearch.models import model_options

    model = config.get("model", TrainConfig.model)
    defaults = model_options(model)
    shape = {"model": model, "batch_size": config.get("batch_size", TrainConfig.batch_size)}
    for key in ("width", "stem_kernel", "blocks_per_stage"):
        if key in defaults:
            value = config.get(key)
            value = defaults[key] if value is None else value
            shape[key] = list(value) if isinstance(value, (list, tuple)) else value
    return shape


@dataclass(frozen=True)
class Estimate:
    """Seconds for every trial to run all its epochs (`most_s`), and, when the scheduler stops trials
    early, for the epochs a synchronous successive halving would train (`likely_s`; ASHA's promotions
    add a few: bench/RESULTS.md, ASHA economy). `source` says where the speeds come from."""

    most_s: float
    epochs: int
    likely_s: float | None
    likely_epochs: int | None
    concurrent: int
    source: str

    def describe(self) -> str:
        text = f"estimated time: {_minutes(self.most_s)} at most ({self.epochs} epochs, {self.concurrent} at once)"
        if self.likely_s is not None:
            text += f"; about {_minutes(self.likely_s)} if the scheduler stops trials at its rungs " \
                    f"(~{self.likely_epochs} epochs)"
        return f"{text}; speeds: {self.source}"


def estimate(plan, *, device: str, concurrent: int, gpu_share: float = 1.0, mps: bool = False) -> Estimate | str:
    """The run time of `plan` (a tune.Plan) with `concurrent` trials at once on `device` ("cpu" or
    "cuda"), each with `gpu_share` of a GPU (`mps`: under MPS). A string says why there is none."""
    dataset = plan.dataset_name
    if dataset not in SIZES:
        return f"estimated time: none (speeds are known for {', '.join(SIZES)}, not {dataset})"
    table = _speeds()["gpu" if device == "cuda" else "cpu"]
    sharing = "alone" if gpu_share >= 1 else ("mps4" if mps else "shared4")
    rows = [r for r in table["rows"] if device != "cuda" or r["sharing"] == sharing]

    missing, trials = [], []
    for configs, seeds in _trial_configs(plan):
        seconds = []
        for config in configs:
            shape = speed_shape(config)
            row = _find(rows, shape)
            if row is None:
                missing.append(_shape_words(shape))
                continue
            seconds.append(_epoch_seconds(config, row, SIZES[dataset]))
        if seconds:  # a trial's seeds train one after another (fused, on a GPU, they may take less)
            trials.append((configs[0].get("epochs", plan.epochs), seeds * sum(seconds) / len(seconds), seeds))
    if missing:
        where = "this CPU" if device != "cuda" else f"a GPU ({sharing})"
        return f"estimated time: none (no measured speed on {where} for {', '.join(sorted(set(missing)))})"

    durations = [epochs * epoch_s + TRIAL_OVERHEAD_S for epochs, epoch_s, _ in trials]
    most = EXPERIMENT_OVERHEAD_S + _makespan(durations, concurrent)
    epochs = sum(e * seeds for e, _, seeds in trials)  # seed epochs
    likely_s = likely_epochs = None
    rungs = plan.scheduler_entry.rungs(plan.epochs, plan.scheduler_settings)
    if rungs:
        trial_epochs = _halving_epochs(len(trials), rungs, plan.epochs, plan.scheduler_settings["reduction_factor"])
        mean_epoch_s = sum(s for _, s, _ in trials) / len(trials)  # a trial's epoch: all its seeds'
        likely_s = EXPERIMENT_OVERHEAD_S + (trial_epochs * mean_epoch_s + len(trials) * TRIAL_OVERHEAD_S) / concurrent
        # Seed epochs, as `epochs` counts them: a stopped trial stops all its seeds.
        likely_epochs = round(trial_epochs * sum(seeds for _, _, seeds in trials) / len(trials))
    return Estimate(most, epochs, likely_s, likely_epochs, concurrent, table["source"])


def estimate_line(plan, options, cluster: Mapping[str, float]) -> str:
    """The plan's estimated time as the runner prints it, for `options` (tune.RunOptions) on a cluster
    with `cluster` resources ({"CPU": n, "GPU": m})."""
    import torch

    gpus = options.trial_gpus(cluster.get("GPU", 0), cuda_graph=plan.base_config().get("cuda_graph") is not False)
    slots = concurrency(plan.num_trials, cluster, options.cpus_per_trial, gpus, options.max_concurrent)
    found = estimate(plan, device="cuda" if gpus > 0 and torch.cuda.is_available() else "cpu", concurrent=slots,
                     gpu_share=gpus, mps=options.mps)
    if not isinstance(found, Estimate):
        return found
    return found.describe() + (f"; with --until-decided, wave 1 (later waves add up to {plan.max_runs - plan.num_runs} "
                               "seed runs)" if plan.until_decided else "")


def concurrency(trials: int, cluster: Mapping[str, float], cpus: float, gpus: float, limit: int | None) -> int:
    """How many trials run at once: as many as the cluster's CPUs and GPUs hold, at most `limit`."""
    fits = [trials, math.floor(cluster.get("CPU", 0) / cpus + 1e-9)]
    if gpus > 0:
        fits.append(math.floor(cluster.get("GPU", 0) / gpus + 1e-9))
    if limit:
        fits.append(limit)
    return max(1, min(fits))


# --------------------------------------------------------------------------------------------- parts
@lru_cache(maxsize=None)
def _speeds() -> dict[str, Any]:
    return json.loads(SPEEDS_FILE.read_text())


def _trial_configs(plan) -> list[tuple[list[dict[str, Any]], int]]:
    """Per trial, the configs one of its seeds may run and its number of seeds: the seeds' configs of a
    fixed design point (one each); for a sampled trial, every combination of the speed-relevant choices it
    may draw (its time is their mean)."""
    space = plan.space
    if space.design != "sample":
        return [([plan.config(g.point, seed) for seed in g.seeds], len(g.seeds)) for g in plan.groups()]
    choices = [[(f.name, level) for level in f.values] for f in space.factors
               if not f.continuous and set(f.keys) & set(SPEED_KEYS)]
    configs = []
    for combo in itertools.product(*choices):
        config = plan.base_config()
        for name, level in combo:
            set_factor(config, name, level)
        configs.append(config)
    return [(configs, len(plan.sample_seeds))] * plan.num_trials


def _find(rows: list[dict[str, Any]], shape: dict[str, Any]) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in shape.items()):
            return row
    return None


def _epoch_seconds(config: Mapping[str, Any], row: Mapping[str, Any], size: tuple[int, int, int]) -> float:
    images, classes, side = size
    val = config.get("val_size", 5000)
    train = images - val
    if config.get("train_subset"):
        train = min(train, config["train_subset"] * classes)
    area = (side / MEASURED_SIDE) ** 2  # convolutions cost in proportion to the pixels
    return area * (train / row["train_images_per_s"] + val / row["eval_images_per_s"])


def _makespan(durations: list[float], slots: int) -> float:
    """When the last trial ends if each starts, in order, in the first free slot."""
    ends = [0.0] * max(1, slots)
    for duration in durations:
        heapq.heappush(ends, heapq.heappop(ends) + duration)
    return max(ends)


def _halving_epochs(trials: int, rungs: list[int], max_t: int, factor: int) -> int:
    """Epochs trained if every trial reaches the first rung and 1/`factor` of those at each rung go on."""
    total, alive, reached = 0, trials, 0
    for rung in [*rungs, max_t]:
        total += alive * (rung - reached)
        reached, alive = rung, max(1, math.ceil(alive / factor))
    return total


def _shape_words(shape: dict[str, Any]) -> str:
    """e.g. `resnet18 width 1.0 batch 512 stem_kernel 7`: the options that differ from the family's named."""
    from cnnsearch.models import model_options

    defaults = model_options(shape["model"])
    words = [shape["model"], f"width {shape.get('width')}", f"batch {shape['batch_size']}"]
    for key in ("stem_kernel", "blocks_per_stage"):
        value, default = shape.get(key), defaults.get(key)
        if isinstance(default, tuple):
            default = list(default)
        if key in shape and value != default:
            words.append(f"{key} {'-'.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(words)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
