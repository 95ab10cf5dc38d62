"""How and where an experiment runs (resources, cluster, storage, name), validated before Ray starts."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

__all__ = ["RunOptions", "RunError", "default_gpu_share", "SHARED_GPU", "FUSE"]

SHARED_GPU = 0.25  # four trials to a card, where sharing pays
MAX_RESOURCE = 1_000_000  # CPUs or GPUs: far above any cluster, far below what Ray's resource accounting holds
PROGRESS = ("line", "table")  # the runner's one-line progress, or Tune's table every 30 s
LOGGERS = ("mlflow",)  # --log-to: loggers besides Tune's own CSV, JSON and TensorBoard files
FUSE = ("auto", "on", "off")  # --fuse: a trial's seeds as one stacked network (auto: on a GPU)


def default_gpu_share(*, mps: bool, cuda_graph: bool) -> float:
    """--gpus-per-trial when it is not given, from bench/RESULTS.md (GPU speed, one H100). Trials whose
    steps are CUDA graphs keep the GPU busy on their own: four sharing it without MPS only take turns
    (0.9-1.2x of one alone), under MPS they run at once (1.2-2.8x). Eager steps leave the GPU idle between
    launches, so four gain from sharing even without MPS (1.4-3.7x)."""
    return SHARED_GPU if (mps or not cuda_graph) else 1.0


class RunError(ValueError):
    """An experiment that cannot run (or could not finish starting); the message is one line."""


@dataclass(frozen=True)
class RunOptions:
    """How `run_experiment` runs a plan; each field is the `python -m tune.run` flag of the same name.

    Resources per trial (`cpus_per_trial`, `gpus_per_trial`: None is `default_gpu_share` on a cluster
    with GPUs, else 0), at most `max_concurrent` at once, a crashed trial retried `max_failures` times
    from its last checkpoint. The cluster: a new local one (`num_cpus`, `num_gpus`: logical GPUs, so a
    CPU machine can exercise fractional packing; `dashboard` on `dashboard_host`; `mps`: an NVIDIA MPS
    daemon for its lifetime, so trials sharing a GPU run at once) or an existing one at `address`. Results in `storage` (a folder or a pyarrow URI) under `name` (default
    SPACE-BUDGET-TIME); `resume` finishes the experiment `name`. The data under `data_dir`
    (downloaded when missing, if `download`). `command` is recorded as what started the run.
    `progress`: "line" (a line when something changed) or "table" (Tune's table); `log_to`: extra
    loggers, e.g. ("mlflow",). `fuse`: whether a trial trains its seeds fused into one stacked network
    ("on"), one after another ("off"), or fused where the trial has a GPU ("auto"; bench/RESULTS.md: on a
    CPU fusing does not pay).
    Raises RunError (one line) for a value out of range."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int = 2
    num_cpus: int | None = None
    num_gpus: float | None = None
    address: str | None = None
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    mps: bool = False
    storage: str = "runs"
    name: str | None = None
    resume: bool = False
    data_dir: str | None = None
    download: bool = True
    command: str | None = None
    progress: str = "line"
    log_to: tuple[str, ...] = ()
    fuse: str = "auto"

    def __post_init__(self) -> None:
        _number("cpus_per_trial", self.cpus_per_trial, above=0, most=MAX_RESOURCE)
        _number("gpus_per_trial", self.gpus_per_trial, least=0, most=MAX_RESOURCE)
        if self.gpus_per_trial is not None and self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise RunError(f"--gpus-per-trial above 1 must be a whole number, got {self.gpus_per_trial}")
        _number("num_gpus", self.num_gpus, least=0, most=MAX_RESOURCE)
        _number("num_cpus", self.num_cpus, least=1, most=MAX_RESOURCE, integer=True)
        _number("max_concurrent", self.max_concurrent, least=1, integer=True)
        _number("max_failures", self.max_failures, least=0, integer=True)
        for name in ("resume", "dashboard", "download", "mps"):
            if not isinstance(getattr(self, name), bool):
                raise RunError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.storage, str) or not self.storage:
            raise RunError(f"--storage must be a folder or a URI, got {self.storage!r}")
        if self.name is not None:
            _folder_name(self.name)
        if self.resume and not self.name:
            raise RunError("--resume needs --name, the experiment to finish (see the folders under --storage)")
        if self.address and (self.num_gpus is not None or self.num_cpus is not None):
            raise RunError("--num-gpus/--num-cpus describe a local cluster; an existing cluster (--address) "
                           "declares its own")
        if self.progress not in PROGRESS:
            raise RunError(f"--progress must be one of {', '.join(PROGRESS)}, got {self.progress!r}")
        if isinstance(self.log_to, str) or not all(x in LOGGERS for x in self.log_to):
            raise RunError(f"--log-to takes {', '.join(LOGGERS)}, got {self.log_to!r}")
        if self.fuse not in FUSE:
            raise RunError(f"--fuse must be one of {', '.join(FUSE)}, got {self.fuse!r}")
        if self.mps and self.address:
            raise RunError("--mps starts MPS for a local cluster; on an existing cluster (--address) start "
                           "`nvidia-cuda-mps-control -d` on each node before `ray start`")

    def trial_gpus(self, cluster_gpus: float, *, cuda_graph: bool = True) -> float:
        """GPUs per trial on a cluster with `cluster_gpus`: as given, else `default_gpu_share` when it has
        any. `cuda_graph`: whether the trials' steps are CUDA graphs (the default on CUDA)."""
        if self.gpus_per_trial is not None:
            return self.gpus_per_trial
        return default_gpu_share(mps=self.mps, cuda_graph=cuda_graph) if cluster_gpus > 0 else 0.0

    def fused(self, trial_gpus: float, unfusable: str | None = None) -> bool | None:
        """Whether a trial with `trial_gpus` trains its seeds fused; None: the trial decides by its device
        (--fuse auto where trials get GPUs, which may be logical ones on a CPU). `unfusable`: a config key the
        plan sets that fused seeds cannot use (`Plan.unfusable`): auto does not fuse, on is refused."""
        if self.fuse == "on" and unfusable:
            raise RunError(f"seeds fused into one network cannot use {unfusable}: set {unfusable}: false in the space, "
                           "or train the seeds one after another (--fuse off)")
        if self.fuse != "auto":
            return self.fuse == "on"
        return None if trial_gpus > 0 and not unfusable else False

    def replace(self, **changes: Any) -> RunOptions:
        return dataclasses.replace(self, **changes)


def _folder_name(name: Any) -> None:
    """An experiment name is one folder under --storage: a path (`../x`, `a/b`) would write elsewhere."""
    if not isinstance(name, str) or not name.strip():
        raise RunError(f"--name must be a folder name, got {name!r}")
    if name in (".", "..") or "/" in name or "\\" in name or not name.isprintable() or len(name) > 200:
        raise RunError(f"--name must be a folder name (no /, \\, .. or control characters, at most 200 "
                       f"characters), got {name!r}; --storage says where the folder goes")


def _number(name: str, value: Any, *, least: float | None = None, above: float | None = None,
            most: float | None = None, integer: bool = False) -> None:
    """None, or a finite number (an int if `integer`) >= `least` / > `above` / <= `most`; RunError
    naming the flag."""
    if value is None:
        return
    flag = "--" + name.replace("_", "-")
    kind = int if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise RunError(f"{flag} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if least is not None and value < least:
        raise RunError(f"{flag} must be >= {least:g}, got {value:g}")
    if above is not None and value <= above:
        raise RunError(f"{flag} must be > {above:g}, got {value:g}")
    if most is not None and value > most:
        raise RunError(f"{flag} must be <= {most:,.0f}, got {value:g}")
