"""A seed's record in its trial's folder, and what a trial of seeds reports.

A Tune trial is a design point with its seeds; each seed keeps `TRIAL/seed-N/`: params.json (that seed's trial
params), result.json (one JSON line per epoch) and the weights-only checkpoints of its latest and best epochs
(`checkpoint_EEEEEE/state.pt`). tune/'s trainable writes it every epoch and continues from it after a restart
(Tune's retry or --resume), so nothing is read back through Tune's pickles; analysis/ reads each seed as a trial.
Imports torch (the checkpoints): `import search_spaces` does not load this module.
"""
from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from pyarrow import fs as pafs

from cnnsearch.engine import load_checkpoint, save_checkpoint

from .modes import best_of
from .record import CHECKPOINT_FILE, put_file

__all__ = ["SeedRecord", "SEED_FOLDER", "CHECKPOINT_DIR", "REPORTED", "summarize", "seed_means"]

SEED_FOLDER = "seed-{}"  # a seed's record in its trial's folder
CHECKPOINT_DIR = "checkpoint_{:06d}"  # by epoch; analysis finds the latest and the best by these names
REPORTED = ("train_loss", "train_acc", "val_loss", "val_acc")  # the metrics a trial's report averages over seeds


class SeedRecord:
    """One seed's record in `folder` (created, with its params.json, if new): the rows it has and the epochs whose
    checkpoints are whole, read from what an earlier run of the trial left."""

    def __init__(self, filesystem: pafs.FileSystem, folder: str, params: dict[str, Any], metric: str,
                 mode: str, started_at: float) -> None:
        self.filesystem, self.folder, self.params, self.metric, self.mode = filesystem, folder, params, metric, mode
        self.started_at = started_at  # the trial's start (Unix s): rows give the time since, as Tune's do
        self.rows: list[dict[str, Any]] = []
        filesystem.create_dir(folder, recursive=True)
        put_file(filesystem, f"{folder}/params.json", json.dumps(params, sort_keys=True).encode())
        self.saved = _rows(filesystem, folder)  # epoch -> the row a run before this one wrote
        self.loaded: tuple[int, dict[str, Any]] | None = None  # the checkpoint read last, until training goes on
        self.kept: dict[int, str] = {}  # epoch -> checkpoint folder name, of the epochs on disk
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
        return bool(self.epoch) and self.state(self.epoch)["history"][-1]["status"] != "running"

    def state(self, epoch: int) -> dict[str, Any] | None:
        """The checkpoint of `epoch` (None for 0: start afresh), with its history as this seed's rows."""
        if not epoch:
            return None
        if self.loaded is not None and self.loaded[0] == epoch:  # `finished` read it just before
            return self.loaded[1]
        with tempfile.TemporaryDirectory() as tmp:  # torch.load needs a seekable local file
            local = Path(tmp) / CHECKPOINT_FILE
            with self.filesystem.open_input_stream(f"{self.folder}/{self.kept[epoch]}/{CHECKPOINT_FILE}") as src:
                local.write_bytes(src.read())
            state = load_checkpoint(local)
        # The checkpoint's history, with what the runner added to each row when it was written (a run killed between
        # an epoch's checkpoint and its result.json line wrote none: then the name it would have written).
        self.rows = [{"checkpoint_dir_name": CHECKPOINT_DIR.format(row["epoch"]), **self.saved.get(row["epoch"], {}),
                      **row} for row in state["history"]]
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


def summarize(seeds: dict[Any, list[dict[str, Any]]], epoch: int) -> dict[str, Any]:
    """A trial's report of `epoch` from each seed's rows (by seed): each metric's mean over the seeds (a seed that
    diverged earlier counts with its last epoch), the standard error of each, and every seed's values."""
    rows = [r[min(epoch, len(r)) - 1] for r in seeds.values() if r]
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
    out["per_seed"] = {str(seed): {k: r[min(epoch, len(r)) - 1].get(k) for k in (*REPORTED, "status")}
                       for seed, r in seeds.items() if r}
    return out


def seed_means(filesystem: pafs.FileSystem, trial: str, metric: str, mode: str) -> dict[str, Any] | None:
    """A trial's best epoch by its seeds' mean of `metric` (as `summarize` reported it), from the records in the
    trial folder `trial`: {"value", "epoch", "last" (the mean at its last epoch), "epochs", "params" (its first
    seed's)}; None when no seed recorded an epoch."""
    prefix = SEED_FOLDER.format("")
    try:
        found = {int(e.base_name.removeprefix(prefix)): e.path for e in filesystem.get_file_info(pafs.FileSelector(trial))
                 if e.type == pafs.FileType.Directory and e.base_name.removeprefix(prefix).isdigit()}
    except OSError:
        return None
    folders = [found[seed] for seed in sorted(found)]
    seeds = {f: [row for _, row in sorted(_rows(filesystem, f).items())] for f in folders}
    epochs = max((len(rows) for rows in seeds.values()), default=0)
    means = [summarize(seeds, e)[metric] for e in range(1, epochs + 1)]
    scored = [(e, m) for e, m in enumerate(means, start=1) if m == m]
    if not scored:
        return None
    with filesystem.open_input_stream(f"{folders[0]}/params.json") as f:
        params = json.loads(f.read().decode("utf-8"))
    epoch, value = best_of(scored, mode, key=lambda item: item[1])
    return {"value": value, "epoch": epoch, "last": means[-1], "epochs": epochs, "params": params}


def _rows(filesystem: pafs.FileSystem, folder: str) -> dict[int, dict[str, Any]]:
    """The rows of a seed's result.json by epoch (none when it has none; a half-written line is skipped)."""
    rows: dict[int, dict[str, Any]] = {}
    if filesystem.get_file_info(f"{folder}/result.json").type != pafs.FileType.File:
        return rows
    with filesystem.open_input_stream(f"{folder}/result.json") as f:
        for line in f.read().decode("utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                row = json.loads(line)
                rows[int(row["epoch"])] = row
    return rows
