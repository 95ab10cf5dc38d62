"""The experiment record: what `tune.run` ran, kept as `cnnsearch.json` beside Tune's files.

`tune/` writes it when it claims an experiment folder; `analysis/` reads it back. It owns the file
names both sides use, the metrics and which direction is better, and the provenance of a run (the
code and the versions that ran it). Records written before this format (no `format` key: the
scheduler as a name with ASHA's settings beside it, no provenance) still load; a file that is not a
record fails with one line.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnsearch.cli import redact

from .levels import FrozenDict, jsonable
from .modes import mode_error
from .schedulers import SCHEDULERS, Scheduler
from .space import TRAIN_DEFAULTS, DesignPoint, Factor, SpaceError

__all__ = ["STATE_FILE", "CHECKPOINT_FILE", "METRICS", "ExperimentRecord", "Provenance", "RecordError", "locate_folder",
           "put_file"]

STATE_FILE = "cnnsearch.json"  # the record, in the experiment folder
CHECKPOINT_FILE = "state.pt"  # the engine checkpoint inside each of Tune's checkpoint_* folders
# What a trial reports, and which direction is better (a space's default mode for its metric).
METRICS = {"val_acc": "max", "val_loss": "min", "train_acc": "max", "train_loss": "min"}
FORMAT = 2  # 1: before the typed record (no `format` key)

_PROJECT = Path(__file__).resolve().parents[1]
_PACKAGES = ("cnnsearch", "search_spaces", "tune", "analysis")
_VERSIONS = ("torch", "torchvision", "ray", "optuna")


class RecordError(ValueError):
    """A file that is not a readable experiment record; the message is one line."""


@dataclass(frozen=True)
class Provenance:
    """The code and software that ran an experiment: the git commit (None outside a checkout) and
    whether the packages differed from it, a SHA-256 over the packages' sources (always), versions,
    and the device the driver saw."""

    commit: str | None
    dirty: bool | None
    source_sha256: str
    python: str
    versions: Mapping[str, str | None]
    device: str

    @classmethod
    def collect(cls) -> Provenance:
        """This process's provenance (imports torch to name the device)."""
        commit, dirty = _git()
        versions = {}
        for name in _VERSIONS:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = None
        return cls(commit, dirty, _source_sha256(), platform.python_version(), versions, _device())


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment as `tune.run` ran it.

    The study: the name of its `space`, its `design`, `factors`, `seeds`, `base_seeds` (the base point's
    when it runs more than `seeds`, else empty) and `points` (None for sampled designs), and `base`, the
    base point's flat TrainConfig dict at this budget (with the runner's overrides, such as --dataset). The
    run: `budget`, `epochs` (the most any trial runs), `num_trials`, the `scheduler` (a
    `search_spaces.schedulers` name) with its `settings`, the `search`, the resources per trial, the
    command and when it started, and its `provenance` (None in old records).
    """

    space: str
    design: str
    base: Mapping[str, Any]
    factors: tuple[Factor, ...]
    epochs: int
    metric: str = "val_acc"
    mode: str = ""  # "" = METRICS' direction for the metric
    seeds: tuple[int, ...] = ()
    points: tuple[DesignPoint, ...] | None = None
    base_seeds: tuple[int, ...] = ()  # () = `seeds`
    space_path: str = ""
    description: str = ""
    source: str = ""
    budget: str = ""
    num_trials: int | None = None
    dataset: str = ""  # "" = the base config's, else TrainConfig's default
    scheduler: str = "fifo"
    settings: Mapping[str, int] = field(default_factory=dict)
    search: str = "grid"
    resources: Mapping[str, float] = field(default_factory=dict)  # {"cpu": ..., "gpu": ...} per trial
    command: str | None = None
    created: str | None = None
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise RecordError(f"scheduler {self.scheduler!r} is not one this version knows ({', '.join(SCHEDULERS)})")
        if self.metric not in METRICS:
            raise RecordError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        object.__setattr__(self, "mode", self.mode or METRICS[self.metric])
        if (error := mode_error(self.mode)) is not None:
            raise RecordError(f"mode {error}")
        object.__setattr__(self, "dataset", self.dataset or self.base.get("dataset", TRAIN_DEFAULTS["dataset"]))
        # JSON values (lists), read-only at the top: it compares with trial configs, which are JSON too.
        object.__setattr__(self, "base", FrozenDict(jsonable(dict(self.base))))
        object.__setattr__(self, "factors", tuple(self.factors))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "base_seeds", tuple(self.base_seeds))
        object.__setattr__(self, "settings", FrozenDict(self.settings))
        object.__setattr__(self, "resources", FrozenDict(self.resources))
        if isinstance(self.command, str):  # credentials in a storage URI stay out of the file and reports
            object.__setattr__(self, "command", redact(self.command))

    # -- what analysis asks ----------------------------------------------------------------------
    def factor(self, name: str) -> Factor | None:
        return next((f for f in self.factors if f.name == name), None)

    def mode_of(self, metric: str) -> str:
        """"max" or "min": the space's mode for its own metric, METRICS' direction for the others."""
        return self.mode if metric == self.metric else METRICS[metric]

    @property
    def scheduler_entry(self) -> Scheduler:
        """The scheduler entry, which knows its rungs and how it reads."""
        return SCHEDULERS[self.scheduler]

    @property
    def rungs(self) -> list[int]:
        """The epochs below the last at which the scheduler could stop trials."""
        return self.scheduler_entry.rungs(self.epochs, self.settings)

    # -- files -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        space = {"name": self.space, "path": self.space_path, "description": self.description, "source": self.source,
                 "design": self.design, "metric": self.metric, "mode": self.mode, "seeds": list(self.seeds),
                 **({"base_seeds": list(self.base_seeds)} if self.base_seeds else {}), "base": jsonable(self.base),
                 "factors": [{"name": f.name, "levels": jsonable(f.levels), "distribution": jsonable(f.distribution)}
                             for f in self.factors],
                 "points": None if self.points is None else
                 [{"label": p.label, "factor": p.factor, "values": jsonable(p.values)} for p in self.points]}
        return {"format": FORMAT, "space": space, "budget": self.budget, "epochs": self.epochs,
                "num_trials": self.num_trials, "dataset": self.dataset,
                "scheduler": {"name": self.scheduler, **self.settings}, "search": self.search,
                "resources": dict(self.resources), "command": self.command, "created": self.created,
                "provenance": None if self.provenance is None else asdict(self.provenance)}

    @classmethod
    def from_json(cls, data: Any) -> ExperimentRecord:
        """A record from its JSON (this format or the one before); RecordError (one line) otherwise."""
        if not (isinstance(data, dict) and isinstance(data.get("space"), dict) and "factors" in data["space"]
                and "epochs" in data):
            raise RecordError("lacks space.factors or epochs; was it written by tune.run?")
        version = data.get("format", 1)
        if version not in (1, FORMAT):
            raise RecordError(f"format {version!r} is newer than this version of cnnsearch reads ({FORMAT})")
        space = data["space"]
        if version == 1:  # the scheduler by name, ASHA's settings at the top (also written for FIFO)
            name = data.get("scheduler") or "fifo"
            keys = SCHEDULERS[name].keys if name in SCHEDULERS else ()
            scheduler = {"name": name, **{k: data[k] for k in keys if k in data}}
        else:
            scheduler = data.get("scheduler") or {}
        provenance = data.get("provenance")
        try:
            return cls(
                space=space.get("name") or "", design=space.get("design") or "", base=space.get("base") or {},
                factors=tuple(_factor(f) for f in space["factors"] or ()), epochs=int(data["epochs"]),
                metric=space.get("metric") or "val_acc", mode=space.get("mode") or "", seeds=space.get("seeds") or (),
                base_seeds=space.get("base_seeds") or (), points=None if space.get("points") is None else
                tuple(DesignPoint(p["label"], p["factor"], p["values"]) for p in space["points"]),
                space_path=space.get("path") or "", description=space.get("description") or "",
                source=space.get("source") or "", budget=data.get("budget") or "", num_trials=data.get("num_trials"),
                dataset=data.get("dataset") or "", scheduler=scheduler.get("name", "fifo"),
                settings={k: v for k, v in scheduler.items() if k != "name"}, search=data.get("search") or "grid",
                resources=data.get("resources") or {}, command=data.get("command"), created=data.get("created"),
                provenance=None if provenance is None else Provenance(**provenance),
            )
        except RecordError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # a field of the wrong shape
            detail = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
            raise RecordError(f"is not a record this version reads ({detail})") from None

    def write(self, folder: str, filesystem: Any = None) -> str:
        """Write `folder`/cnnsearch.json (the folder is made); `filesystem` is a pyarrow filesystem
        (default: local). Written beside the target and moved into place, so a full disk never leaves
        half a record; OSError then. Returns the file's path."""
        filesystem = filesystem or _local()
        path = f"{folder.rstrip('/')}/{STATE_FILE}"
        filesystem.create_dir(folder, recursive=True)
        put_file(filesystem, path, json.dumps(self.to_json(), indent=2).encode())
        return path

    @classmethod
    def read(cls, folder: str, filesystem: Any = None) -> ExperimentRecord:
        """Read `folder`/cnnsearch.json; RecordError (one line, naming the file) when it is missing or
        not a record."""
        filesystem = filesystem or _local()
        path = f"{folder.rstrip('/')}/{STATE_FILE}"
        try:
            with filesystem.open_input_stream(path) as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise RecordError(f"no {STATE_FILE}") from None
        except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, not JSON, nested without end
            raise RecordError(f"{STATE_FILE} is not JSON ({' '.join(str(exc).split())})") from None
        try:
            return cls.from_json(data)
        except RecordError as exc:
            raise RecordError(f"{STATE_FILE} {exc}") from None


def put_file(filesystem: Any, path: str, data: bytes) -> None:
    """Write `data` to `path` on a pyarrow `filesystem`: beside it, then moved into place, so a full disk
    or a kill never leaves half a file (OSError then; the temporary file is removed)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with filesystem.open_output_stream(tmp) as f:
            f.write(data)
        filesystem.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            filesystem.delete_file(tmp)
        raise


def _factor(data: Mapping[str, Any]) -> Factor:
    distribution = data.get("distribution")
    if distribution is not None:
        kind, args = distribution
        distribution = (kind, tuple(args))
    try:
        return Factor(data["name"], levels=data.get("levels"), distribution=distribution)
    except SpaceError as exc:
        raise RecordError(str(exc)) from None


def locate_folder(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of an experiments folder: a local path (made absolute, as Tune needs)
    or any URI pyarrow understands (file://, s3://, gs://, ...). RecordError (one line) for a URI it
    cannot open (a bad scheme, missing credentials)."""
    from pyarrow import fs

    if "://" not in location:
        return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    try:
        filesystem, path = fs.FileSystem.from_uri(location)
    except Exception as exc:  # pyarrow raises several types for bad URIs and missing credentials
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordError(redact(f"{location}: {detail}")) from None
    return filesystem, path.rstrip("/")


def _local() -> Any:
    from pyarrow import fs

    return fs.LocalFileSystem()


def _git() -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether the packages differ from it), or (None, None) outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_PROJECT), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", *_PACKAGES))
    except (OSError, subprocess.SubprocessError):
        return None, None


def _source_sha256() -> str:
    """SHA-256 over the packages' .py and .yaml files (paths and contents, in path order)."""
    digest = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((_PROJECT / package).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                digest.update(str(path.relative_to(_PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    return f"cpu: {model or platform.processor() or platform.machine()}"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
