"""The function trainable: a Tune trial is a design point with its seeds, trained by `cnnsearch.fit_group`.

The seeds train fused into one stacked network or one after another within each epoch (`fuse`), each as
its own run would alone. Every epoch becomes one `ray.tune.report` of the seeds' mean of each metric (what
ASHA, HyperBand and Optuna judge), its standard error and each seed's values. Each seed keeps a record of its
own in the trial's folder (search_spaces/seeds.py), from which a restarted trial (Tune's retry, or `--resume`)
continues: nothing is read back through Tune's pickled state.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import ray.tune
import torch

from cnnsearch.config import TrainConfig
from cnnsearch.data import Dataset
from cnnsearch.engine import fit_group
from search_spaces import locate_folder, seed_params, trial_config
from search_spaces.plan import group_folder
from search_spaces.seeds import SEED_FOLDER, SeedRecord, summarize

__all__ = ["train_group", "checked_configs", "claim_device"]


def train_group(params: dict[str, Any], data: Dataset, *, storage: str, name: str, metric: str = "val_acc",
                mode: str = "max", fuse: bool | None = None, factors: tuple[str, ...] = ()) -> None:
    """Train one trial: `params` as `search_spaces.plan.Plan` builds them (a point with its `seeds`), on `data`, on
    the device its Tune resources give it, recording each seed under `storage`/`name`/GROUP (GROUP:
    `search_spaces.plan.group_folder`, from the sampled `factors`). `fuse`: the seeds as one stacked network (None:
    on a GPU, where it pays; on a CPU it does not, bench/RESULTS.md). Each seed keeps its latest epoch's
    checkpoint and its best by `metric` (`mode`)."""
    started_at = time.time()
    configs = checked_configs(params)
    device = claim_device()
    filesystem, root = locate_folder(storage)
    folder = f"{root}/{name}/{group_folder(params, ray.tune.get_context().get_trial_id(), factors)}"
    seeds = [SeedRecord(filesystem, f"{folder}/{SEED_FOLDER.format(c.seed)}", p, metric, mode, started_at)
             for c, p in zip(configs, seed_params(params))]
    live = [s for s in seeds if not s.finished]
    start = min((s.epoch for s in live), default=0)  # every live seed has a checkpoint of this epoch
    states = [s.state(start) for s in live]
    fused = device.type == "cuda" if fuse is None else fuse

    def report(epoch: int) -> None:
        ray.tune.report({**summarize({s.params["seed"]: s.rows for s in seeds}, epoch), "started_at": started_at, "device": str(device), "fused": fused})

    def on_epoch(reports: list[tuple[int, dict[str, Any], Any]]) -> None:
        epoch = reports[0][1]["epoch"]
        for m, metrics, state in reports:  # every seed's checkpoint first, so a restart finds them all at `epoch`
            live[m].keep(state.state_dict(), metrics)
        for m, _, _ in reports:
            live[m].forget_before(epoch)
        report(epoch)

    if not live:  # every seed had ended before Tune heard the trial end (a killed driver): report where they ended
        report(max(len(s.rows) for s in seeds))
        return
    by_seed = {c.seed: c for c in configs}
    fit_group([by_seed[s.params["seed"]] for s in live], data, fused=fused, on_epoch=on_epoch,
              checkpoints=states if start else None, device=device)


def checked_configs(params: dict[str, Any]) -> list[TrainConfig]:
    """The trial's TrainConfig per seed (unknown keys raise), refusing params no Plan makes."""
    # Tune logs a line per saved checkpoint, i.e. per epoch and trial: noise in the driver's console.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    if not params or "seeds" not in params:
        raise ValueError(f"refusing trial params {dict(params or {})!r}: not a trial of a cnnsearch plan (no seeds)")
    return [TrainConfig.from_dict(trial_config(p)) for p in seed_params(params)]


def claim_device() -> torch.device:
    """The trial's device follows the resources Tune gave it. With a fraction f of a GPU, cap this
    process's CUDA memory at f, so one greedy trial cannot starve the trials sharing the card."""
    resources = ray.tune.get_context().get_trial_resources().required_resources
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    if gpus > 0 and torch.cuda.is_available():
        if gpus < 1:
            torch.cuda.set_per_process_memory_fraction(gpus, 0)
        return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU
    return torch.device("cpu")
