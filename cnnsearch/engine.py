"""The training engine: `fit` trains a `TrainConfig` on a `Dataset`, `fit_group` several as one group (fused into
one stacked network, or one after another within each epoch), `evaluate` scores a model on a split.

Runs without Ray. The whole data set lives on the training device as uint8 tensors and is augmented
there in batches (see `cnnsearch.data`), so the loop has no per-image Python and no worker processes.

One epoch loop (`train_units`) serves both: it trains units (a `Run`: one model; cnnsearch.fused's `FusedRuns`:
one stacked network), builds every history row and applies the one rule for a diverged member. What
cnnsearch.fused builds on is the section "The interface cnnsearch.fused builds on" below.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .files import replaced
from .data import Augment, Dataset, ImageSplit, iterate_batches, split_train_val
from .models import build_model
from .steps import (EagerStep, GraphedStep, autocast, portable_optimizer_state, portable_scheduler_state,
                    prepare_optimizer_for_graphs)

__all__ = [
    "ImageClassifier", "FitResult", "EvalResult", "EpochState", "Execution",
    "fit", "fit_group", "evaluate", "resolve_device", "build_classifier", "save_checkpoint", "load_checkpoint",
]

CHECKPOINT_FORMAT = 1
# Config fields that may differ between a checkpoint and the run resuming it: they change where and
# for how long training runs, not what it computes up to the checkpoint.
_RESUMABLE_CHANGES = {"epochs", "device", "compile", "cuda_graph", "eval_batch_size"}


class ImageClassifier(nn.Module):
    """A registry network behind per-channel normalisation, so the model takes raw uint8 images
    (B, C, H, W) and a saved model is self-contained for inference."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        # Stats are in [0, 1] units; inputs arrive in [0, 255].
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.float() - self.mean) / self.std)


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing)
    accuracy: float  # fraction in [0, 1]
    per_class_accuracy: list[float]
    confusion: torch.Tensor  # (K, K) int64, rows = true class, columns = predicted

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "accuracy": self.accuracy,
                "per_class_accuracy": self.per_class_accuracy, "confusion": self.confusion.tolist()}


@dataclass(frozen=True)
class Execution:
    """How a run executes on its device: never what it learns (bf16's rounding aside)."""

    bf16: bool  # bf16 autocast
    channels_last: bool
    cuda_graph: bool  # full batches replay one captured CUDA graph (cnnsearch.steps.GraphedStep)
    compile: bool  # the training step's network is torch.compile'd (one static shape)

    @classmethod
    def resolve(cls, config: TrainConfig, device: torch.device) -> "Execution":
        """The config's choices, with None meaning: on for CUDA, off elsewhere."""
        cuda = device.type == "cuda"
        if config.cuda_graph and not cuda:
            raise ValueError(f"cuda_graph needs a CUDA device, but this run is on {device}; "
                             "drop --cuda-graph (or set cuda_graph: null) or run on a GPU")
        pick = lambda flag: cuda if flag is None else flag  # noqa: E731
        return cls(bf16=pick(config.bf16), channels_last=pick(config.channels_last),
                   cuda_graph=pick(config.cuda_graph), compile=config.compile)


@dataclass
class FitResult:
    status: str  # "completed" or "diverged"
    history: list[dict[str, Any]]  # one metrics dict per epoch
    model: ImageClassifier
    config: TrainConfig
    device: torch.device
    step: str = "eager"  # the training step that ran: "eager", "cuda_graph" or why capture fell back to eager

    @property
    def best(self) -> dict[str, float] | None:
        """The epoch with the highest validation accuracy."""
        finite = [h for h in self.history if math.isfinite(h["val_acc"])]
        return max(finite, key=lambda h: h["val_acc"]) if finite else None


@dataclass
class EpochState:
    """What `on_epoch` gets besides the metrics: a way to snapshot the full training state."""

    _capture: Callable[[], dict[str, Any]] = field(repr=False)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: model, optimizer, scheduler, RNGs, epoch, history."""
        return self._capture()

    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(self.state_dict(), path)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
    return device


def build_classifier(config: TrainConfig, dataset: Dataset) -> ImageClassifier:
    net = build_model(config.model, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                      image_size=dataset.image_size, **config.model_options())
    return ImageClassifier(net, dataset.mean, dataset.std)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    wd = config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=wd)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}[config.optimizer]
    return cls(params, lr=config.lr, weight_decay=wd)


def _make_scheduler(config: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    sched = torch.optim.lr_scheduler
    if config.lr_schedule == "exponential":
        return sched.ExponentialLR(optimizer, gamma=config.lr_decay)
    if config.lr_schedule == "step":
        return sched.StepLR(optimizer, step_size=config.step_size, gamma=config.lr_decay)
    if config.lr_schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return sched.LambdaLR(optimizer, lambda epoch: 1.0)


def evaluate(model: nn.Module, split: ImageSplit, *, batch_size: int = 1024, bf16: bool = False,
             channels_last: bool = False, num_classes: int | None = None) -> EvalResult:
    """Accuracy, per-class accuracy and confusion matrix of `model` on `split` (moved to the
    model's device). Restores the model's train/eval mode afterwards."""
    return _evaluate(model, split, batch_size=batch_size, bf16=bf16, channels_last=channels_last,
                     num_classes=num_classes)[0]


def evaluate_members(model: nn.Module, split: ImageSplit, *, members: int, batch_size: int, bf16: bool = False,
                     channels_last: bool = False, num_classes: int | None = None) -> list[EvalResult]:
    """`evaluate` of M stacked networks (cnnsearch.fused: logits (M, B, K), every member sees each batch): one
    result per member."""
    return _evaluate(model, split, batch_size=batch_size, bf16=bf16, channels_last=channels_last,
                     num_classes=num_classes, members=members)


@torch.no_grad()
def _evaluate(model: nn.Module, split: ImageSplit, *, batch_size: int, bf16: bool, channels_last: bool,
              num_classes: int | None, members: int | None = None) -> list[EvalResult]:
    """`evaluate`, for one network or for M stacked ones (cnnsearch.fused: each batch goes through
    every member, logits (M, B, K)); one result per member."""
    device = next(model.parameters()).device
    split = split.to(device)
    if num_classes is None:
        num_classes = int(split.labels.max().item()) + 1 if len(split) else 0
    cells = num_classes * num_classes
    lead = () if members is None else (members,)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(lead, device=device, dtype=torch.float64)
    confusion = torch.zeros(lead + (cells,), device=device, dtype=torch.int64)
    try:
        for images, labels in iterate_batches(split, batch_size, shuffle=False):
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                logits = model(images)
            if members is None:
                loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
                confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=cells)
            else:  # (M, B, K): cross_entropy's (N, K, d) form, and one bincount with a block of cells per member
                targets = labels.expand(members, -1)
                loss_sum += F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none").double().sum(1)
                block = cells * torch.arange(members, device=device)[:, None]  # (M, 1): member m's first cell
                index = block + targets * num_classes + logits.argmax(-1)
                confusion += torch.bincount(index.flatten(), minlength=members * cells).view(members, cells)
    finally:
        model.train(was_training)
    n = max(len(split), 1)
    results = []
    for loss, counts in zip(loss_sum.view(-1).tolist(), confusion.view(-1, cells).cpu()):
        counts = counts.view(num_classes, num_classes).clone()  # its own storage, not a view of all members
        per_class = counts.diag().double() / counts.sum(1).clamp(min=1).double()
        results.append(EvalResult(loss=loss / n, accuracy=counts.diag().sum().item() / n,
                                  per_class_accuracy=per_class.tolist(), confusion=counts))
    return results


def fit(config: TrainConfig, data: Dataset, *, on_epoch: Callable[[dict[str, Any], EpochState], None] | None = None,
        checkpoint: str | os.PathLike | dict[str, Any] | None = None, device: torch.device | str | None = None,
        progress: Callable[[Any], Any] | None = None) -> FitResult:
    """Train `config` on `data`, validating every epoch on a split carved from `data.train`.

    on_epoch(metrics, state): called after every epoch with train/val loss and accuracy, lr (the rate
        used during the epoch), epoch time (s), training images/s, setup_s (fit's start to the first batch) and status ("running", then
        "completed" or "diverged" on the last epoch); `state.save(path)` writes a checkpoint.
        Raising from it stops training.
    checkpoint: a path or state dict from an earlier run of the same config; training resumes after
        its last epoch and ends with exactly the metrics of an uninterrupted run (on CPU).
    device: overrides `config.device` (a Tune trial passes the GPU it was given).
    progress: progress(batches, total=N, totals=F) wraps the batch iterator of each epoch for a progress
        bar; F() gives (sum of losses, correct predictions) over the batches trained so far this epoch
        (it waits for the device: call it now and then, not per batch).

    A NaN or inf loss ends the run with status "diverged" instead of raising. torch's global RNGs are the
    run's own while it trains (seeded from `config.seed`); the caller's are left as they were.
    """
    entered = time.perf_counter()
    run = Run(config, data, device, checkpoint=checkpoint)
    report = None if on_epoch is None else (lambda reports: [on_epoch(metrics, state) for _, metrics, state in reports])
    train_units([run], on_epoch=report, progress=progress, setup_s=time.perf_counter() - entered)
    return run.results()[0]


def fit_group(configs: Sequence[TrainConfig], data: Dataset, *, fused: bool,
              on_epoch: Callable[[list[tuple[int, dict[str, Any], EpochState]]], None] | None = None,
              checkpoints: Sequence[str | os.PathLike | dict[str, Any]] | None = None,
              device: torch.device | str | None = None, progress: Callable[..., Any] | None = None) -> list[FitResult]:
    """Train several configs as one group, epoch by epoch; one `FitResult` per config, in order, each what
    `fit` returns for it.

    fused: True trains them as one stacked network (cnnsearch.fused: they may differ only in
        `cnnsearch.fused.TRIAL_KEYS`, seed and optimizer; one set of kernels for all, which pays on a GPU;
        results equal `fit`'s to float rounding). False trains them one after another within each epoch,
        each with its own model, optimizer, data generator and global-RNG state: they may differ in
        anything, and each member's metrics and checkpoints are bit for bit those of `fit` of its config.
    on_epoch(reports): after every epoch, once, with (m, metrics, state) for each member m still training (the
        metrics and state `fit`'s on_epoch gets; `state.save(path)` writes member m's checkpoint, a `fit`
        checkpoint). One call for all members, so a caller can save their checkpoints together (the CLI
        holds Ctrl-C meanwhile): resuming needs every member at the same epoch. Raising from it stops every
        member.
    checkpoints: one per config (paths or state dicts, from `fit` or from here), all after the same epoch.
    progress: as `fit`'s; wraps each epoch of each unit (fused: all members at once, totals their means).
    A member whose loss turns NaN or inf ends "diverged" and reports no more epochs; the others go on.
    """
    entered = time.perf_counter()
    configs = _check_group(configs)
    states = read_checkpoints(checkpoints, len(configs))
    if fused:
        from .fused import FusedRuns  # cnnsearch.fused builds on this module, so it is imported when asked for

        units: list[Unit] = [FusedRuns(configs, data, device, states=states)]
    else:
        splits: dict[tuple, tuple[ImageSplit, ImageSplit]] = {}  # members with the same split share one copy
        units = [Run(config, data, device, checkpoint=state, splits=splits)
                 for config, state in zip(configs, states or [None] * len(configs))]
    train_units(units, on_epoch=on_epoch, progress=progress, setup_s=time.perf_counter() - entered)
    return [result for unit in units for result in unit.results()]


# --- The interface cnnsearch.fused builds on: a run's data, RNGs and bookkeeping, and the epoch loop ----------

@dataclass(frozen=True)
class RunData:
    """A run's device, how it executes there, and its data on that device."""

    device: torch.device
    execution: Execution
    train: ImageSplit
    val: ImageSplit
    augment: Augment | None
    num_classes: int

    def set_backend_flags(self) -> None:
        """Set before each epoch: the flags are global and a group's members may want others."""
        if self.device.type == "cuda":
            # cuDNN times its convolution algorithms once per shape; a trial runs thousands of steps of one shape.
            torch.backends.cudnn.benchmark = self.execution.cuda_graph


def prepare_data(config: TrainConfig, data: Dataset, device: torch.device | str | None,
                 splits: dict[tuple, tuple[ImageSplit, ImageSplit]] | None = None) -> RunData:
    """`config`'s device (`device` overrides it) and its train/validation split on it. `splits`: a cache of
    splits on devices that runs of one group share."""
    device = resolve_device(config.device) if device is None else torch.device(device)
    run = Execution.resolve(config, device)
    key = (str(device), config.val_size, config.split_seed, config.train_subset)
    if splits is None or key not in splits:
        train, val = split_train_val(data, val_size=config.val_size, seed=config.split_seed,
                                     train_subset=config.train_subset)
        split = (train.to(device), val.to(device))
        if splits is not None:
            splits[key] = split
    train, val = split if splits is None else splits[key]
    augment = Augment() if (data.default_augment if config.augment is None else config.augment) else None
    return RunData(device, run, train, val, augment, data.num_classes)


class Rng:
    """A run's own state of torch's global RNGs (initial weights, dropout masks), put in force only while the
    run computes: runs trained one after another in one process each draw what they would draw alone, and the
    caller's global RNGs are left as they were."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        # What torch.manual_seed(seed) gives the CPU and the run's GPU, without touching the global RNGs.
        self.cpu = torch.Generator().manual_seed(seed).get_state()
        self.cuda = torch.Generator(device).manual_seed(seed).get_state() if device.type == "cuda" else None

    @contextlib.contextmanager
    def in_force(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            try:
                yield
            finally:
                self.cpu = torch.get_rng_state()
                if self.cuda is not None:
                    self.cuda = torch.cuda.get_rng_state(self.device)

    def restore(self, state: dict[str, Any]) -> None:
        """The RNG states a checkpoint saved."""
        self.cpu = state["torch_rng"]
        if self.cuda is not None and state.get("cuda_rng") is not None:
            self.cuda = state["cuda_rng"]


class Member:
    """One run's bookkeeping beside its weights: its config, optimizer, per-epoch scheduler, data generator
    and history. A `Run` has one; a stacked network (cnnsearch.fused) one per member, each optimizer over that
    member's slice of the stacked weights."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer, device: torch.device):
        self.config, self.optimizer, self.device = config, optimizer, device
        self.scheduler = _make_scheduler(config, optimizer)
        # A generator of its own for shuffling and augmentation, so its state can be saved and restored.
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.history: list[dict[str, Any]] = []
        self._lr_tensors: list[torch.Tensor] | None = None

    @property
    def status(self) -> str:
        return "diverged" if self.history and self.history[-1]["status"] == "diverged" else "completed"

    @property
    def live(self) -> bool:
        """Whether it has epochs left to train."""
        return self.status != "diverged" and len(self.history) < self.config.epochs

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of this config: its optimizer, scheduler, generator and history (the
        weights and the global RNGs are the caller's)."""
        _check_resumable(self.config, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])

    def prepare_step(self, execution: Execution) -> None:
        """After resuming (a checkpoint holds the eager form): for a CUDA graph, the optimizer in its graph-safe
        form and the learning-rate tensors it reads."""
        if execution.cuda_graph:
            prepare_optimizer_for_graphs(self.optimizer, self.device)
            self._lr_tensors = [group["lr"] for group in self.optimizer.param_groups]

    def end_epoch(self) -> None:
        self.scheduler.step()
        if self._lr_tensors is not None:
            _keep_lr_tensors(self.optimizer, self._lr_tensors)

    def checkpoint(self, weights: dict[str, torch.Tensor], rng: Rng) -> dict[str, Any]:
        """A `fit` checkpoint: everything `resume` and `Rng.restore` need to continue exactly."""
        return {
            "format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "epoch": len(self.history),
            "model": weights, "optimizer": portable_optimizer_state(self.optimizer.state_dict()),
            "scheduler": portable_scheduler_state(self.scheduler.state_dict()),
            "generator": self.generator.get_state(), "torch_rng": rng.cpu, "cuda_rng": rng.cuda,
            "history": list(self.history),
        }


class Unit(Protocol):
    """Members trained in one pass over the data: a `Run` (one member), or cnnsearch.fused.FusedRuns (a
    stacked network of several)."""

    members: list[Member]
    rng: Rng  # in force while the unit trains and validates
    images: int  # training images per member and epoch

    def train_epoch(self, progress: Callable[..., Any] | None) -> list[tuple[float, float]]:
        """One epoch of every member: (mean training loss, accuracy) per member."""

    def validate(self, indices: list[int]) -> dict[int, tuple[float, float]]:
        """(validation loss, accuracy) of the members at `indices`."""

    def weights(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state dict, keyed as an `ImageClassifier`'s."""

    def results(self) -> list[FitResult]:
        """One per member, in order."""


class Run:
    """One run as a unit of the epoch loop: a model, optimizer, training step, data and global RNGs of its own."""

    def __init__(self, config: TrainConfig, data: Dataset, device: torch.device | str | None = None, *,
                 checkpoint: str | os.PathLike | dict[str, Any] | None = None,
                 splits: dict[tuple, tuple[ImageSplit, ImageSplit]] | None = None):
        self.config = config
        self.data = prepare_data(config, data, device, splits)
        device, run = self.data.device, self.data.execution
        self.rng = Rng(config.seed, device)
        with self.rng.in_force():  # initial weights from the seed
            model = build_classifier(config, data).to(device)
        if run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        member = Member(config, make_optimizer(config, model.parameters()), device)
        self.members = [member]
        if checkpoint is not None:
            state = _read_checkpoint(checkpoint)
            member.resume(state)
            model.load_state_dict(state["model"])
            self.rng.restore(state)
        member.prepare_step(run)
        # Evaluation and odd-sized batches use `model`; only full training batches use the compiled network,
        # so it sees one shape and one mode and never recompiles between training and evaluation.
        step_model = torch.compile(model, dynamic=False) if run.compile else model
        step_class = GraphedStep if run.cuda_graph else EagerStep
        self.step = step_class(step_model, member.optimizer, label_smoothing=config.label_smoothing, bf16=run.bf16,
                               channels_last=run.channels_last, batch_size=config.batch_size, eager_model=model)
        self.images = len(self.data.train)

    def train_epoch(self, progress: Callable[..., Any] | None) -> list[tuple[float, float]]:
        self.data.set_backend_flags()
        self.model.train()
        return [_train_epoch(self.step, self.data.train, self.config, self.members[0].generator, self.data.augment,
                             progress=progress)]

    def validate(self, indices: list[int]) -> dict[int, tuple[float, float]]:
        if not indices:
            return {}
        run = self.data.execution
        result = evaluate(self.model, self.data.val, batch_size=self.config.eval_batch_size, bf16=run.bf16,
                          channels_last=run.channels_last, num_classes=self.data.num_classes)
        return {0: (result.loss, result.accuracy)}

    def weights(self, i: int) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def results(self) -> list[FitResult]:
        member = self.members[0]
        return [FitResult(status=member.status, history=member.history, model=self.model, config=self.config,
                          device=self.data.device, step=self.step.ran)]


def train_units(units: Sequence[Unit], *, on_epoch: Callable[[list[tuple[int, dict[str, Any], EpochState]]], None]
                | None, progress: Callable[..., Any] | None, setup_s: float) -> None:
    """The epoch loop of `fit` and `fit_group`. Each epoch trains every unit that has members still training,
    one after another, each with its RNGs in force; then on_epoch gets all their members' epochs at once, m
    numbering the members of all units in order. A member whose training loss is not finite is not
    validated (NaN and 0 stand in); one whose losses are not finite ends "diverged" and trains no more."""
    members = [(unit, i) for unit in units for i in range(len(unit.members))]
    first = {id(unit): members.index((unit, 0)) for unit in units}  # m of each unit's member 0
    while True:
        # (m, train, val, lr, its unit's epoch in s): a seed trained one after another is timed on its own
        done: list[tuple[int, tuple[float, float], tuple[float, float], float, float]] = []
        train_s = 0.0  # the group's training time this epoch (s), validation excluded
        for unit in units:
            live = [i for i, member in enumerate(unit.members) if member.live]
            if not live:
                continue
            lrs = [member.lr for member in unit.members]  # the rates used during the epoch
            with unit.rng.in_force():
                start = time.perf_counter()
                trained = unit.train_epoch(progress)
                train_s += time.perf_counter() - start
                scores = unit.validate([i for i in live if math.isfinite(trained[i][0])])
                for member in unit.members:
                    member.end_epoch()
            unit_s = time.perf_counter() - start
            done += [(first[id(unit)] + i, trained[i], scores.get(i, (math.nan, 0.0)), lrs[i], unit_s) for i in live]
        if not done:
            return
        reports = []
        for m, (train_loss, train_acc), (val_loss, val_acc), lr, epoch_s in done:
            unit, i = members[m]
            member = unit.members[i]
            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            last = len(member.history) + 1 == member.config.epochs
            member.history.append({
                "epoch": len(member.history) + 1, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "epoch_time_s": epoch_s,
                # The member's share of the group's throughput, so the members' figures add up to the group's.
                "images_per_s": unit.images / train_s, "setup_s": setup_s,
                "status": "diverged" if diverged else ("completed" if last else "running")})
            reports.append((m, dict(member.history[-1]), EpochState(_capture(unit, i))))
        if on_epoch is not None:
            on_epoch(reports)


def _capture(unit: Unit, i: int) -> Callable[[], dict[str, Any]]:
    """Member i's checkpoint, as a snapshot: copies (its tensors keep training)."""
    return lambda: _copy(unit.members[i].checkpoint(unit.weights(i), unit.rng))


def read_checkpoints(checkpoints: Sequence[str | os.PathLike | dict[str, Any]] | None, count: int
                     ) -> list[dict[str, Any]] | None:
    """`count` checkpoints (paths, or state dicts, copied), all after the same epoch: a group's members
    advance together."""
    if checkpoints is None:
        return None
    if len(checkpoints) != count:
        raise ValueError(f"one checkpoint per trial: {count} trials, {len(checkpoints)} checkpoints")
    states = [_read_checkpoint(checkpoint) for checkpoint in checkpoints]
    epochs = {state["epoch"] for state in states}
    if len(epochs) != 1:
        raise ValueError(f"the checkpoints are from different epochs ({sorted(epochs)}); "
                         "a group's members advance together")
    return states


def _read_checkpoint(checkpoint: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    # A copy of a state dict: an optimizer adopts the tensors of the state it loads and updates them in place.
    return _copy(checkpoint) if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)


def _copy(state: Any) -> Any:
    """A snapshot: tensors copied."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copy(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_copy(value) for value in state]
    return state


def _check_group(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    configs = list(configs)
    if not configs:
        raise ValueError("nothing to train: a group needs at least one config")
    dicts = [c.to_dict() for c in configs]
    if any(dicts.count(d) > 1 for d in dicts):
        raise ValueError("the same trial twice: a group's trials must differ (in their seed, say)")
    return configs


def _train_epoch(step: EagerStep, train: ImageSplit, config: TrainConfig, generator, augment,
                 *, progress) -> tuple[float, float]:
    """One pass over `train` in shuffled, augmented batches; returns (mean loss, accuracy)."""
    step.start_epoch()
    batches = iterate_batches(train, config.batch_size, shuffle=True, generator=generator, augment=augment)
    if progress is not None:
        batches = progress(batches, total=math.ceil(len(train) / config.batch_size), totals=step.totals)
    for images, labels in batches:
        step(images, labels)
    loss_sum, correct = step.totals()
    n = len(train)
    return loss_sum / n, correct / n


def _keep_lr_tensors(optimizer: torch.optim.Optimizer, tensors: list[torch.Tensor]) -> None:
    """A captured step reads the learning rate from these tensors. Schedulers of recent torch fill them in
    place; one that assigns a float instead would leave the graph on the old rate, so copy it over."""
    for group, tensor in zip(optimizer.param_groups, tensors):
        if group["lr"] is not tensor:
            tensor.fill_(float(group["lr"]))
            group["lr"] = tensor


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write atomically, so a run killed mid-save never leaves a half checkpoint that looks valid. The
    temporary file beside it goes whatever happens; a failed write (a full disk) is an OSError."""
    try:
        with replaced(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError:  # torch's zip writer reports a failed write (a full disk) as "unexpected pos"
        raise OSError(errno.EIO, "the write failed (is the disk full?)", os.fspath(path)) from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, never running code from it.

    Results folders are shared (s3://, shared disks), and a full unpickle of a planted file runs whatever
    it names; `weights_only=True` admits only tensors and plain containers, all a checkpoint holds.
    Raises ValueError (one line, naming the file) for a file that is unsafe, truncated or foreign.
    """
    import pickle

    name = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's weights-only unpickler refused an object
        found = re.search(r"GLOBAL (\S+)", str(exc))  # the object torch refused, e.g. posix.system
        what = found.group(1) if found else "objects other than tensors and plain data"
        raise ValueError(f"refusing to load {name}: it names {what}, which a cnnsearch checkpoint never holds "
                         "(loading it could run code)") from None
    except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot read checkpoint {name}: {exc.__class__.__name__}: {detail}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a cnnsearch checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def _check_resumable(config: TrainConfig, state: dict[str, Any]) -> None:
    saved, now = state["config"], config.to_dict()
    differ = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
    if differ:
        raise ValueError(f"checkpoint was made with a different config ({', '.join(differ)}); "
                         "resume with the config it was made with")
