"""The training engine: `fit` trains a `TrainConfig` on a `Dataset`, `evaluate` scores a model on a split.

Runs without Ray. The whole data set lives on the training device as uint8 tensors and is augmented
there in batches (see `cnnsearch.data`), so the loop has no per-image Python and no worker processes.
"""
from __future__ import annotations

import errno
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

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
    "fit", "evaluate", "resolve_device", "build_classifier", "save_checkpoint", "load_checkpoint",
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


def _make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
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

    A NaN or inf loss ends the run with status "diverged" instead of raising.
    """
    entered = time.perf_counter()
    device, run, train, val, augment = _prepare(config, data, device)
    torch.manual_seed(config.seed)  # model initialisation and dropout masks
    model = build_classifier(config, data).to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(config, model.parameters())
    scheduler = _make_scheduler(config, optimizer)
    # A generator of our own for shuffling and augmentation, so its state can be saved and restored.
    generator = torch.Generator(device=device).manual_seed(config.seed)
    history: list[dict[str, float]] = []

    if checkpoint is not None:
        state = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
        _check_resumable(config, state)
        model.load_state_dict(state["model"])
        history = _restore(state, optimizer, scheduler, generator)
        _restore_rngs(state, device)
    lr_tensors = _prepare_step(run, optimizer, device)  # after loading: a checkpoint holds the eager form
    # Evaluation and odd-sized batches use `model`; only full training batches use the compiled network,
    # so it sees one shape and one mode and never recompiles between training and evaluation.
    step_model = torch.compile(model, dynamic=False) if run.compile else model
    step_class = GraphedStep if run.cuda_graph else EagerStep
    step = step_class(step_model, optimizer, label_smoothing=config.label_smoothing, bf16=run.bf16,
                      channels_last=run.channels_last, batch_size=config.batch_size, eager_model=model)

    def capture() -> dict[str, Any]:
        return _checkpoint(config, history, model.state_dict(), optimizer, scheduler, generator, device)

    setup_s = time.perf_counter() - entered  # split, copy to device, build: the wait before the first batch
    status = "completed"
    for epoch in range(len(history), config.epochs):
        start = time.perf_counter()
        lr = float(optimizer.param_groups[0]["lr"])
        model.train()
        train_loss, train_acc = _train_epoch(step, train, config, generator, augment, progress=progress)
        train_time = time.perf_counter() - start
        val_loss, val_acc = math.nan, 0.0  # what a diverged epoch reports
        if math.isfinite(train_loss):
            result = evaluate(model, val, batch_size=config.eval_batch_size, bf16=run.bf16,
                              channels_last=run.channels_last, num_classes=data.num_classes)
            val_loss, val_acc = result.loss, result.accuracy
        scheduler.step()
        if lr_tensors is not None:
            _keep_lr_tensors(optimizer, lr_tensors)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            status = "diverged"
        epoch_status = status if (status == "diverged" or epoch + 1 == config.epochs) else "running"
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                        "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                        "epoch_time_s": time.perf_counter() - start, "images_per_s": len(train) / train_time,
                        "setup_s": setup_s, "status": epoch_status})
        if on_epoch is not None:
            on_epoch(dict(history[-1]), EpochState(capture))
        if status == "diverged":
            break
    return FitResult(status=status, history=history, model=model, config=config, device=device, step=step.ran)


def _checkpoint(config: TrainConfig, history: list[dict[str, Any]], model_state: dict[str, torch.Tensor],
                optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator,
                device: torch.device) -> dict[str, Any]:
    """A checkpoint of one run (fit's, or one member of cnnsearch.fused's): everything `_restore` and
    `_restore_rngs` need to continue exactly."""
    return {
        "format": CHECKPOINT_FORMAT, "config": config.to_dict(), "epoch": len(history),
        "model": model_state, "optimizer": portable_optimizer_state(optimizer.state_dict()),
        "scheduler": portable_scheduler_state(scheduler.state_dict()),
        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "history": list(history),
    }


def _restore(state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator
             ) -> list[dict[str, Any]]:
    """Load a checkpoint's optimizer, scheduler and data generator; returns its history (the model's weights
    and the global RNGs are the caller's: fused members share those)."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    return list(state["history"])


def _restore_rngs(state: dict[str, Any], device: torch.device) -> None:
    """torch's global RNGs (dropout masks) as a checkpoint saved them."""
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _prepare(config: TrainConfig, data: Dataset, device: torch.device | str | None
             ) -> tuple[torch.device, Execution, ImageSplit, ImageSplit, Augment | None]:
    """(device, execution, train split, validation split, augmentation): the run's device and data on it."""
    device = resolve_device(config.device) if device is None else torch.device(device)
    run = Execution.resolve(config, device)
    train, val = split_train_val(data, val_size=config.val_size, seed=config.split_seed,
                                 train_subset=config.train_subset)
    augment = Augment() if (data.default_augment if config.augment is None else config.augment) else None
    return device, run, train.to(device), val.to(device), augment


def _prepare_step(run: Execution, optimizer: torch.optim.Optimizer, device: torch.device) -> list | None:
    """Set up the device for the training step; for a CUDA graph, the optimizer in its graph-safe form and the
    learning-rate tensors it reads (returned, for `_keep_lr_tensors`)."""
    if device.type == "cuda":
        # cuDNN times its convolution algorithms once per shape; a trial runs thousands of steps of one shape.
        torch.backends.cudnn.benchmark = run.cuda_graph
    if not run.cuda_graph:
        return None
    prepare_optimizer_for_graphs(optimizer, device)
    return [group["lr"] for group in optimizer.param_groups]


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
