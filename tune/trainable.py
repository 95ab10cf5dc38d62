"""The function trainable: a Tune trial is a design point with its seeds, trained by `cnnsearch.fit_group`.

The seeds train fused into one stacked network or one after another within each epoch (`fuse`), each as
its own run would alone. Every epoch becomes one `ray.tune.report` of the seeds' mean of each metric (what
ASHA, HyperBand and Optuna judge), its standard error and each seed's values. Each seed also keeps a record
of its own in the trial's folder, `GROUP/seed-N/`: params.json (that seed's trial params), result.json (one
JSON line per epoch) and its latest and best epochs' weights-only checkpoints (`checkpoint_EEEEEE/state.pt`).
`analysis` reads those seeds as trials; a restarted trial (Tune's retry, or `--resume`) continues every
seed from them, so nothing is read back through Tune's pickled state.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.tune
import torch
from pyarrow import fs as pafs

from cnnsearch.config import TrainConfig
from cnnsearch.data import Dataset
from cnnsearch.engine import fit_group, load_checkpoint, save_checkpoint
from search_spaces import CHECKPOINT_FILE, best_of, locate_folder, put_file, seed_params, trial_config
from search_spaces.plan import group_folder

__all__ = ["train_group", "checked_configs", "claim_device", "SEED_FOLDER"]

SEED_FOLDER = "seed-{}"  # a seed's record in its trial's folder
CHECKPOINT_DIR = "checkpoint_{:06d}"  # by epoch; analysis finds the latest and the best by these names
REPORTED = ("train_loss", "train_acc", "val_loss", "val_acc")  # the metrics each report averages over seeds


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
    seeds = [_Seed(filesystem, f"{folder}/{SEED_FOLDER.format(c.seed)}", p, metric, mode, started_at)
             for c, p in zip(configs, seed_params(params))]
    live = [s for s in seeds if not s.finished]
    start = min((s.epoch for s in live), default=0)  # every live seed has a checkpoint of this epoch
    states = [s.state(start) for s in live]
    fused = device.type == "cuda" if fuse is None else fuse

    def report(epoch: int) -> None:
        ray.tune.report({**_summary(seeds, epoch), "started_at": started_at, "device": str(device), "fused": fused})

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


def _summary(seeds: list[_Seed], epoch: int) -> dict[str, Any]:
    """The report of `epoch`: each metric's mean over the seeds (a seed that diverged earlier counts with
    its last epoch), the standard error of each, and every seed's values."""
    rows = [s.rows[min(epoch, len(s.rows)) - 1] for s in seeds if s.rows]
    out: dict[str, Any] = {"epoch": epoch, "seeds": len(rows)}
    for key in REPORTED:
        values = [float(r[key]) for r in rows]
        mean = sum(values) / len(values)
        out[key] = mean
        spread = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else math.nan
        out[f"{key}_se"] = math.sqrt(spread / len(values)) if spread == spread else math.nan
    for key in ("lr", "epoch_time_s", "setup_s"):
        out[key] = rows[0].get(key)
    out["images_per_s"] = sum(r.get("images_per_s", 0.0) for r in rows)
    out["diverged"] = sum(r["status"] == "diverged" for r in rows)
    out["status"] = "completed" if all(r["status"] != "running" for r in rows) else "running"
    out["per_seed"] = {str(s.params["seed"]): {k: s.rows[min(epoch, len(s.rows)) - 1].get(k)
                                               for k in (*REPORTED, "status")} for s in seeds if s.rows}
    return out


class _Seed:
    """One seed's record in its trial's folder: params.json, result.json and its checkpoints."""

    def __init__(self, filesystem: pafs.FileSystem, folder: str, params: dict[str, Any], metric: str,
                 mode: str, started_at: float) -> None:
        self.filesystem, self.folder, self.params, self.metric, self.mode = filesystem, folder, params, metric, mode
        self.started_at = started_at  # the trial's start (Unix s): rows give the time since, as Tune's do
        self.rows: list[dict[str, Any]] = []
        self.kept: dict[int, str] = {}  # epoch -> checkpoint folder name, of the epochs on disk
        filesystem.create_dir(folder, recursive=True)
        put_file(filesystem, f"{folder}/params.json", json.dumps(params, sort_keys=True).encode())
        self.saved: dict[int, dict[str, Any]] = {}  # epoch -> the row a run before this one wrote
        self.loaded: tuple[int, dict[str, Any]] | None = None  # the checkpoint read last, until training goes on
        if filesystem.get_file_info(f"{folder}/result.json").type == pafs.FileType.File:
            with filesystem.open_input_stream(f"{folder}/result.json") as f:
                for line in f.read().decode("utf-8").splitlines():
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        row = json.loads(line)
                        self.saved[int(row["epoch"])] = row
        for entry in filesystem.get_file_info(pafs.FileSelector(folder)):
            if entry.type == pafs.FileType.Directory and entry.base_name.startswith("checkpoint_"):
                if filesystem.get_file_info(f"{entry.path}/{CHECKPOINT_FILE}").type == pafs.FileType.File:
                    self.kept[int(entry.base_name.split("_")[1])] = entry.base_name

    @property
    def epoch(self) -> int:
        """The latest epoch with a whole checkpoint (0: none)."""
        return max(self.kept, default=0)

    @property
    def finished(self) -> bool:
        """Whether the checkpoint of the latest epoch ended the run (completed or diverged)."""
        if not self.epoch:
            return False
        return self.state(self.epoch)["history"][-1]["status"] != "running"

    def state(self, epoch: int) -> dict[str, Any] | None:
        """The checkpoint of `epoch` (None for 0: start afresh), with its history as this seed's rows."""
        if not epoch:
            return None
        if self.loaded is not None and self.loaded[0] == epoch:  # `finished` read it just before
            return self.loaded[1]
        path = f"{self.folder}/{self.kept[epoch]}/{CHECKPOINT_FILE}"
        with tempfile.TemporaryDirectory() as tmp:  # torch.load needs a seekable local file
            local = Path(tmp) / CHECKPOINT_FILE
            with self.filesystem.open_input_stream(path) as src:
                local.write_bytes(src.read())
            state = load_checkpoint(local)
        # The checkpoint's history, with what the runner added to each row when it was written.
        self.rows = [{**self.saved.get(row["epoch"], {}), **row} for row in state["history"]]
        self.loaded = (epoch, state)
        return state

    def keep(self, state: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Write this epoch's checkpoint, then the rows up to it."""
        epoch = metrics["epoch"]
        self.loaded = None  # training has gone past the checkpoint it started from: do not hold it
        name = CHECKPOINT_DIR.format(epoch)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / CHECKPOINT_FILE
            save_checkpoint(state, local)
            self.filesystem.create_dir(f"{self.folder}/{name}", recursive=True)
            put_file(self.filesystem, f"{self.folder}/{name}/{CHECKPOINT_FILE}", local.read_bytes())
        self.kept[epoch] = name
        self.rows = [*self.rows[:epoch - 1], {**metrics, "checkpoint_dir_name": name,
                                              "time_total_s": time.time() - self.started_at}]
        lines = "".join(json.dumps({**row, "seed": self.params["seed"]}) + "\n" for row in self.rows)
        self.saved[epoch] = self.rows[-1]
        put_file(self.filesystem, f"{self.folder}/result.json", lines.encode())

    def forget_before(self, epoch: int) -> None:
        """Delete the checkpoints older than `epoch`, except the best epoch's (what `analysis best` loads)."""
        scored = [r for r in self.rows if isinstance(r.get(self.metric), (int, float)) and r[self.metric] == r[self.metric]]
        best = best_of(scored, self.mode, key=lambda r: r[self.metric])["epoch"] if scored else None
        for old in [e for e in self.kept if e < epoch and e != best]:
            self.filesystem.delete_dir(f"{self.folder}/{self.kept.pop(old)}")
