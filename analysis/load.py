"""Read an experiment folder that `tune.run` wrote into two tidy tables: `trials` and `epochs`.

The folder may be a local path or any pyarrow filesystem URI (file://, s3://, gs://, ...). Only files
are trusted, never folder names: the experiment record (`cnnsearch.json`, `search_spaces.ExperimentRecord`)
says what the study was, each trial folder's `params.json` what the trial ran and `result.json` (one
JSON line per epoch) what it measured. A Tune trial is a design point with its seeds: each seed's record
(`TRIAL/seed-N/`: params.json, result.json, checkpoints) is read as a trial of its own, and the runner's
ledger (`groups.json`) says how each Tune trial ended. Folders of an earlier layout (a trial per seed) read
as they always did.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyarrow import fs as pafs

from cnnsearch.cli import redact
from search_spaces import (
    CHECKPOINT_FILE,
    METRICS,
    STATE_FILE,
    ExperimentRecord,
    Factor,
    Ledger,
    RecordError,
    best_of,
    level_key,
    locate_folder,
    trial_config,
)

__all__ = ["Experiment", "ExperimentError", "SkippedTrialWarning", "load_experiment"]

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "images_per_s",
                 "time_total_s", "status")
# Tune's own trial status (experiment_state-*.json) -> ours, for trials without a final row. PAUSED:
# a scheduler (HyperBand) halted the trial at a rung; Tune's last snapshot still says PAUSED for the
# trials it then stopped there, when the experiment ended.
_TUNE_STATUS = {"TERMINATED": "stopped", "PAUSED": "stopped", "ERROR": "error", "RUNNING": "unfinished",
                "PENDING": "unfinished"}
_TRIAL_FILES = ("params.json", "result.json", "progress.csv")
# The ledger's end of a Tune trial -> a seed's status, for seeds without a final row.
_LEDGER_STATUS = {"terminated": "stopped", "error": "error", "running": "unfinished", "planned": "unfinished",
                  "replaced": "unfinished"}


class ExperimentError(ValueError):
    """A folder that is not a readable experiment; the message is one line."""


class SkippedTrialWarning(UserWarning):
    """A trial folder that could not be read (half-written, deleted files); it is left out."""


@dataclass
class Experiment:
    """One experiment: its `record` (what ran), the `trials` table (one row per trial) and the
    `epochs` table (one row per trial and reported epoch). `skipped` names the unreadable trial folders."""

    path: str
    record: ExperimentRecord
    trials: pd.DataFrame
    epochs: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # trial_id -> flat TrainConfig dict
    filesystem: pafs.FileSystem | None = field(default=None, repr=False)
    root: str = ""

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1] or self.path

    @property
    def design(self) -> str:
        return self.record.design

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def mode(self) -> str:
        return self.record.mode

    @property
    def factors(self) -> tuple[Factor, ...]:
        return self.record.factors

    @property
    def max_epochs(self) -> int:
        return self.record.epochs

    @property
    def scheduler(self) -> str:
        return self.record.scheduler

    @property
    def dataset(self) -> str:
        return self.record.dataset

    def factor(self, name: str) -> Factor | None:
        """The factor `name`, or None."""
        return self.record.factor(name)

    def varied(self) -> list[str]:
        """Factors the loaded trials actually vary: two or more levels present (or a continuous draw)."""
        out = []
        for f in self.factors:
            if f.name in self.trials and self.trials[f.name].nunique(dropna=True) > 1:
                out.append(f.name)
        return out

    def read_checkpoint(self, trial_id: str, *, best: bool = False) -> dict[str, Any]:
        """The latest-epoch engine checkpoint of a trial (`cnnsearch.engine.load_checkpoint`'s dict), or
        with `best` its best epoch's (Tune keeps both)."""
        from cnnsearch.engine import load_checkpoint

        row = self.trials.set_index("trial_id").loc[trial_id]
        path = row["best_checkpoint" if best else "checkpoint"]
        if not isinstance(path, str) or not path:
            raise ExperimentError(f"trial {row['folder']} has no {'best-epoch ' if best else ''}checkpoint")
        if self.filesystem is None or self.filesystem.type_name == "local":
            return load_checkpoint(path)
        with tempfile.TemporaryDirectory() as folder:  # torch.load needs a seekable local file
            local = os.path.join(folder, CHECKPOINT_FILE)
            with self.filesystem.open_input_stream(path) as src, open(local, "wb") as dst:
                dst.write(src.read())
            return load_checkpoint(local)


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read experiment folder `path` (a local path or a pyarrow URI such as file:///..., s3://...).

    A trial folder that cannot be read (no or broken params.json, a result.json that is missing, empty
    or has a line that is not JSON) is left out with a `SkippedTrialWarning` naming it. Raises
    ExperimentError (one line) for a folder that does not exist, is not a cnnsearch experiment, or has
    no readable trial.
    """
    text = redact(os.fspath(path))  # for messages and the report; the filesystem keeps the credentials
    try:
        filesystem, root = locate_folder(os.fspath(path))
    except RecordError as exc:
        raise ExperimentError(str(exc)) from None
    info = filesystem.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise ExperimentError(f"{text}: no such experiment folder")
    if filesystem.get_file_info(f"{root}/{STATE_FILE}").type != pafs.FileType.File:
        raise ExperimentError(f"{text}: not an experiment folder written by `python -m tune.run` (no {STATE_FILE})")
    try:
        record = ExperimentRecord.read(root, filesystem)
    except RecordError as exc:
        raise ExperimentError(f"{text}: {exc}") from None

    tune_status = _tune_statuses(filesystem, root)
    ledger = _ledger(filesystem, root)
    trial_rows, epoch_rows, skipped, configs = [], [], [], {}
    for name, path, files, status in _trial_folders(filesystem, root, tune_status, ledger):
        try:
            trial, rows, config = _read_trial(filesystem, path, files, record, status, name)
        except _BrokenTrial as exc:
            skipped.append(f"{name}: {exc}")
            warnings.warn(f"skipping trial folder {name}: {exc}", SkippedTrialWarning, stacklevel=2)
            continue
        trial_rows.append(trial)
        epoch_rows.extend(rows)
        configs[trial["trial_id"]] = config
    if not trial_rows:
        extra = f" ({len(skipped)} unreadable)" if skipped else ""
        raise ExperimentError(f"{text}: no readable trial folders{extra}; did the experiment start?")
    trials = _trials_frame(trial_rows, record)
    epochs = _epochs_frame(epoch_rows, trials)
    return Experiment(path=text, record=record, trials=trials, epochs=epochs, skipped=skipped, configs=configs,
                      filesystem=filesystem, root=root)


# ------------------------------------------------------------------------------------------ files
def _read(filesystem: pafs.FileSystem, path: str) -> str:
    with filesystem.open_input_stream(path) as f:
        return f.read().decode("utf-8")


def _tune_statuses(filesystem: pafs.FileSystem, root: str) -> dict[str, str]:
    """trial_id -> Tune's status (TERMINATED, ERROR, RUNNING, ...) from the newest experiment_state
    file. Tune's private format: best effort, empty when it cannot be read."""
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=False))
        names = sorted(e.path for e in entries if re.fullmatch(r"experiment_state-.*\.json", e.base_name))
        if not names:
            return {}
        data = json.loads(_read(filesystem, names[-1]))
        out = {}
        for item in data.get("trial_data", []):
            trial = json.loads(item[0]) if isinstance(item, list) else item
            out[trial["trial_id"]] = trial["status"]
        return out
    except Exception:  # a half-written or newer-format state file: statuses then come from the rows alone
        return {}


def _ledger(filesystem: pafs.FileSystem, root: str) -> dict[str, str]:
    """Tune trial folder -> how it ended, from the runner's ledger; empty without one (an older layout)."""
    try:
        return {name: group["status"] for name, group in Ledger.read(filesystem, root).groups.items()}
    except RecordError as exc:
        warnings.warn(f"{exc}; trial ends come from their rows", SkippedTrialWarning, stacklevel=3)
        return {}


def _trial_folders(filesystem: pafs.FileSystem, root: str, tune_status: dict[str, str], ledger: dict[str, str]):
    """(name, path, files, statuses) of every trial: each seed folder of a Tune trial (named TRIAL/seed-N), or
    a Tune trial folder of the older layout. `statuses`: trial id -> Tune's status or the ledger's."""
    def listing(path: str) -> list:
        return filesystem.get_file_info(pafs.FileSelector(path, recursive=False))

    for entry in sorted((e for e in listing(root) if e.type == pafs.FileType.Directory), key=lambda e: e.base_name):
        if entry.base_name.startswith("."):
            continue
        inside = listing(entry.path)
        seeds = sorted((e for e in inside if e.type == pafs.FileType.Directory and e.base_name.startswith("seed-")),
                       key=lambda e: e.base_name)
        if seeds:
            end = _LEDGER_STATUS.get(ledger.get(entry.base_name, ""), "unfinished")
            for seed in seeds:
                name = f"{entry.base_name}/{seed.base_name}"
                yield name, seed.path, {f.base_name: f for f in listing(seed.path)}, {_trial_id(name): end}
            continue
        files = {f.base_name: f for f in inside}
        if any(name in files for name in _TRIAL_FILES):  # else not a trial folder (e.g. an analysis output)
            yield entry.base_name, entry.path, files, {k: _TUNE_STATUS.get(v, "unfinished") for k, v in tune_status.items()}


def _trial_id(name: str) -> str:
    """A seed's trial id: its Tune trial's folder and seed, as one name fit for a file name."""
    return name.replace("/seed-", "_seed")


class _BrokenTrial(Exception):
    pass


def _read_trial(filesystem, folder: str, files: dict, record: ExperimentRecord, statuses: dict[str, str],
                name: str):
    if "params.json" not in files:
        raise _BrokenTrial("no params.json")
    try:
        params = json.loads(_read(filesystem, files["params.json"].path))
        config = trial_config(params)
    except (ValueError, TypeError, RecursionError) as exc:
        raise _BrokenTrial(f"params.json unreadable ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})")
    if "result.json" not in files:
        raise _BrokenTrial("no result.json (the trial reported no epoch)")
    rows = []
    for number, line in enumerate(_read(filesystem, files["result.json"].path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise _BrokenTrial(f"result.json line {number} is not JSON (half-written?)") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise _BrokenTrial(f"result.json line {number} has no epoch number")
        rows.append(row)
    if not rows:
        raise _BrokenTrial("result.json is empty")
    by_epoch = {int(r["epoch"]): r for r in rows}  # a restored trial may re-report an epoch: keep the last
    rows = [by_epoch[e] for e in sorted(by_epoch)]

    trial_id = str(rows[-1].get("trial_id") or _trial_id(name))
    last = rows[-1]
    epochs, planned = len(rows), int(config.get("epochs", record.epochs))
    status = str(last.get("status", "running"))
    if status not in ("completed", "diverged"):
        # Tune's (or the ledger's) end of the trial first: a trial restored after a failure keeps its old error.txt.
        if trial_id in statuses:
            status = statuses[trial_id]
        elif "error.txt" in files:
            status = "error"
        else:  # no state from Tune (a copied folder): a trial ended early was stopped if the scheduler stops any
            status = "stopped" if record.scheduler_entry.stops_early else "unfinished"
    point = params.get("design_point") if isinstance(params.get("design_point"), dict) else None

    trial: dict[str, Any] = {
        "trial_id": trial_id, "folder": name,
        "label": point["label"] if point else None,
        "design_factor": point["factor"] if point else None,
        "seed": int(config.get("seed", 0)),
    }
    trial.update(_factor_values(config, record))
    metric = record.metric
    scored = [r for r in rows if _finite(r.get(metric))]
    best = best_of(scored, record.mode, key=lambda r: r[metric]) if scored else None
    trial.update({
        "status": status,
        # From the status, whatever the scheduler: Tune ended it (TERMINATED) before its last epoch.
        "stopped_early": bool(status == "stopped" and epochs < planned),
        "epochs": epochs, "max_epochs": planned,
        "best_epoch": int(best["epoch"]) if best else None,
    })
    for m, mode in METRICS.items():
        values = [r[m] for r in rows if _finite(r.get(m))]
        trial[f"best_{m}"] = best_of(values, mode) if values else float("nan")
        trial[f"last_{m}"] = last.get(m, float("nan"))
    # Of epochs tied at the best value Tune keeps the latest's checkpoint: any of them will do.
    tied = [_checkpoint_of(filesystem, files, r) for r in scored if r[metric] == best[metric]] if best else []
    trial.update({
        "wall_time_s": float(last.get("time_total_s", float("nan"))),
        "train_time_s": float(sum(r.get("epoch_time_s", 0.0) for r in rows)),
        "device": last.get("device"),
        "cpu": record.resources.get("cpu"), "gpu": record.resources.get("gpu"),
        "checkpoint": _latest_checkpoint(filesystem, files),
        "best_checkpoint": next((path for path in tied if path), None),
    })
    trial.update({f"config/{k}": (level_key(v) if isinstance(v, (list, dict)) else v) for k, v in config.items()})
    epoch_rows = [{"trial_id": trial_id, **{c: r.get(c) for c in EPOCH_COLUMNS}} for r in rows]
    return trial, epoch_rows, config


def _factor_values(config: dict[str, Any], record: ExperimentRecord) -> dict[str, Any]:
    """Each factor's level in this trial, read from the effective config (so one design's encoding
    of a point does not matter): a level key, or the drawn number for a continuous factor."""
    out = {}
    for factor in record.factors:
        if factor.multi_key:
            out[factor.name] = level_key({k: config.get(k) for k in factor.keys})
        else:
            value = config.get(factor.name)
            out[factor.name] = value if factor.continuous else level_key(value)
    return out


def _latest_checkpoint(filesystem, files: dict) -> str | None:
    for name in sorted((n for n in files if n.startswith("checkpoint_")), reverse=True):
        path = f"{files[name].path}/{CHECKPOINT_FILE}"
        if filesystem.get_file_info(path).type == pafs.FileType.File:
            return path
    return None


def _checkpoint_of(filesystem, files: dict, row: dict | None) -> str | None:
    """The checkpoint reported with `row` (Tune names it in the row), if it is still kept."""
    name = (row or {}).get("checkpoint_dir_name")
    if not isinstance(name, str) or name not in files:
        return None
    path = f"{files[name].path}/{CHECKPOINT_FILE}"
    return path if filesystem.get_file_info(path).type == pafs.FileType.File else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def _trials_frame(rows: list[dict], record: ExperimentRecord) -> pd.DataFrame:
    trials = pd.DataFrame(rows)
    if trials["label"].isna().all():  # grid and sample designs: label by the factor values
        trials["label"] = [_label(row, record) for _, row in trials.iterrows()]
    # The space's order: the base point, then (one at a time) each factor's points, levels in order.
    position = {f.name: i for i, f in enumerate(record.factors)}
    sort_keys = [trials["design_factor"].map(lambda f: position.get(f, -1) if isinstance(f, str) else -1)]
    for factor in record.factors:
        if not factor.continuous:
            sort_keys.append(trials[factor.name].map({lv: i for i, lv in enumerate(factor.by_key())}))
    trials = trials.assign(**{f"_k{i}": k for i, k in enumerate(sort_keys)})
    trials = trials.sort_values([f"_k{i}" for i in range(len(sort_keys))] + ["seed", "trial_id"], kind="stable")
    return trials.drop(columns=[f"_k{i}" for i in range(len(sort_keys))]).reset_index(drop=True)


def _label(row: pd.Series, record: ExperimentRecord) -> str:
    parts = []
    for factor in record.factors:
        value = row[factor.name]
        if factor.continuous:
            parts.append(f"{factor.name}={value:.3g}")
        else:
            parts.append(factor.label(factor.by_key().get(value, value)))
    return ",".join(parts) or "base"


def _epochs_frame(rows: list[dict], trials: pd.DataFrame) -> pd.DataFrame:
    # Factor levels stay in `trials` (join on trial_id): a factor may share a name with an epoch
    # column (`lr` is also the learning rate an epoch ran at).
    keys = ["trial_id", "label", "design_factor", "seed"]
    epochs = pd.DataFrame(rows).merge(trials[keys], on="trial_id", how="left")
    epochs = epochs[[*keys, *EPOCH_COLUMNS]]
    order = {t: i for i, t in enumerate(trials["trial_id"])}
    return epochs.sort_values(["trial_id", "epoch"], key=lambda s: s.map(order) if s.name == "trial_id" else s,
                              kind="stable").reset_index(drop=True)
