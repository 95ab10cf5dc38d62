"""Several trials of one network trained as one: the repeats cnnsearch runs of every point of a space (seeds),
or trials that differ only in their optimizer, fused HFTA-style (Wang et al., MLSys 2021) into one process and
one set of kernels.

The members' weights are stacked along a new leading dimension and the network runs under `torch.func.vmap`,
which turns the members' convolutions into one grouped convolution, their linear layers into one batched
matmul and their BatchNorms into one BatchNorm over all their channels. Small recipes (batch 64) that leave a
GPU idle between kernel launches get M times the work per launch.

What member m computes is what `fit` computes for its config: the same initial weights (built after
`torch.manual_seed(seed)`, as `fit` builds them), the same data order and augmentation (a generator of its
own, seeded as `fit` seeds it), and its own optimizer and schedule (a torch optimizer of its own over views
of its slice of the stacked weights, so its hyperparameters, state and update arithmetic are exactly its
own). Two things differ: float rounding (grouped kernels sum in another order) and dropout masks, which all
members draw from one stream instead of each from its seed's.

A member's checkpoint is a `fit` checkpoint, so `fit` resumes it as a run of its own, and `fit_fused`
resumes from the members' checkpoints.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .config import TrainConfig
from .data import Augment, Dataset, iterate_batches
from .engine import (EpochState, FitResult, ImageClassifier, _check_resumable, _checkpoint, _evaluate,
                     _keep_lr_tensors, _make_optimizer, _make_scheduler, _prepare, _prepare_step, _restore,
                     _restore_rngs, build_classifier, load_checkpoint)
from .steps import EagerStep, GraphedStep

__all__ = ["StackedClassifier", "MemberOptimizers", "fit_fused", "fit_seeds", "TRIAL_KEYS"]

# What fused members may differ in: their seed and their optimizer. Everything else (network, data, batch size,
# epochs, how it executes) they share, as they share one network and one batch loop.
TRIAL_KEYS = ("seed", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "lr_decay", "step_size")


class StackedClassifier(nn.Module):
    """M copies of one `ImageClassifier` architecture with their weights stacked (leading dimension M).

    forward((M, B, C, H, W)) -> (M, B, K): member m classifies batch m. forward((B, C, H, W)) -> (M, B, K):
    every member classifies the same batch (evaluation). In training mode each member's BatchNorm uses
    its own batch statistics and updates its own running statistics, as it would alone.
    """

    def __init__(self, members: Sequence[ImageClassifier]):
        super().__init__()
        if not members:
            raise ValueError("a StackedClassifier needs at least one member")
        params, buffers = stack_module_state(list(members))
        self.members = len(members)
        # Module attribute names cannot hold dots; the members' names are kept in order beside them.
        self._param_names, self._buffer_names = list(params), list(buffers)
        for i, name in enumerate(self._param_names):
            self.register_parameter(f"p{i}", nn.Parameter(params[name]))
        for i, name in enumerate(self._buffer_names):
            self.register_buffer(f"b{i}", buffers[name])
        # The architecture without storage: functional_call runs it with the stacked tensors' slices. Kept out
        # of the module tree (object.__setattr__) so it adds no parameters, and never moves between devices.
        object.__setattr__(self, "_template", copy.deepcopy(members[0]).to("meta"))

    def train(self, mode: bool = True) -> "StackedClassifier":
        super().train(mode)
        self._template.train(mode)  # BatchNorm and dropout read the template's mode
        return self

    def _tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = {name: getattr(self, f"p{i}") for i, name in enumerate(self._param_names)}
        buffers = {name: getattr(self, f"b{i}") for i, name in enumerate(self._buffer_names)}
        return params, buffers

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             images: torch.Tensor) -> torch.Tensor:
        return functional_call(self._template, (params, buffers), (images,))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batched = 0 if images.dim() == 5 else None
        # randomness="different": each member draws its own dropout mask.
        return vmap(self._one, in_dims=(0, 0, batched), randomness="different")(*self._tensors(), images)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's state dict, keyed as `ImageClassifier.state_dict()` (copies, on this device)."""
        params, buffers = self._tensors()
        return {name: tensor[m].detach().clone() for name, tensor in {**params, **buffers}.items()}

    def load_member_state(self, m: int, state: dict[str, torch.Tensor]) -> None:
        params, buffers = self._tensors()
        expected = {**params, **buffers}
        if set(state) != set(expected):
            raise ValueError("the state does not fit this network (different parameter names)")
        with torch.no_grad():
            for name, tensor in expected.items():
                tensor[m].copy_(state[name])

    def member(self, m: int, build: Callable[[], ImageClassifier]) -> ImageClassifier:
        """Member m as a network of its own (`build()`'s network with its weights, on this device)."""
        model = build().to(self.p0.device)
        model.load_state_dict(self.member_state(m))
        return model


class MemberOptimizers:
    """One torch optimizer per member, each over views of that member's slice of the stacked weights: member
    m's own hyperparameters, state and arithmetic, updating its slice in place. Stands in for one optimizer in
    the training step (`zero_grad`, `step`): `step` hands each member the gradient slices backward produced,
    then steps every member's optimizer."""

    def __init__(self, model: StackedClassifier, configs: Sequence[TrainConfig]):
        self.stacked = list(model.parameters())  # (M, ...) each
        # Parameters over views of the stacked storage: what a member's optimizer updates lands in the stack.
        self.views = [[nn.Parameter(p.data[m]) for p in self.stacked] for m in range(len(configs))]
        self.optimizers = [_make_optimizer(config, views) for config, views in zip(configs, self.views)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        # Always to None, whatever is asked: `step` points the members' gradients at backward's new ones.
        for p in self.stacked:
            p.grad = None
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for m, (views, optimizer) in enumerate(zip(self.views, self.optimizers)):
            for view, p in zip(views, self.stacked):
                view.grad = None if p.grad is None else p.grad[m]  # a view of the stacked gradient: no copy
            optimizer.step()


def fit_seeds(config: TrainConfig, seeds: Sequence[int], data: Dataset, **options: Any) -> list[FitResult]:
    """`fit_fused` of `config` once per seed in `seeds` (its own seed is ignored)."""
    seeds = list(seeds)
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seeds must be whole numbers, got {seed!r}")
    return fit_fused([config.replace(seed=seed) for seed in seeds], data, **options)


def fit_fused(configs: Sequence[TrainConfig], data: Dataset, *,
              on_epoch: Callable[[list[tuple[int, dict[str, Any], EpochState]]], None] | None = None,
              checkpoints: Sequence[str | dict[str, Any]] | None = None,
              device: torch.device | str | None = None,
              progress: Callable[..., Any] | None = None) -> list[FitResult]:
    """Train the `configs` fused into one stacked network; one `FitResult` per config, in order, each as `fit`
    would return it. The configs may differ only in `TRIAL_KEYS` (the seed and the optimizer).

    on_epoch(reports): after every epoch, once, with (m, metrics, state) for each member m still training (the
        metrics and state `fit`'s on_epoch gets; `state.save(path)` writes member m's checkpoint). One call
        for all members, so a caller can save their checkpoints together (the CLI holds Ctrl-C meanwhile):
        resuming needs every member at the same epoch. Raising from it stops every member.
    checkpoints: one per config (paths or state dicts, from `fit` or from here), all after the same epoch.
    progress: as `fit`'s; its totals are the members' means (per member's images: batches are (M, B, ...)).
    A member whose loss turns NaN or inf ends "diverged" and reports no more epochs; the others go on.
    Runs eagerly or with the CUDA-graph step (the default on CUDA); not compiled, and in the default memory
    layout: channels_last does not carry through vmap's grouped convolutions, so the automatic choice is off.
    """
    entered = time.perf_counter()
    configs = _check_configs(configs)
    config = configs[0]  # what they share
    device, run, train, val, augment = _prepare(config, data, device)

    def build(seed: int | None = None) -> ImageClassifier:
        if seed is not None:
            torch.manual_seed(seed)  # as fit: initial weights from the seed
        return build_classifier(config, data)

    model = StackedClassifier([build(c.seed) for c in configs]).to(device)
    optimizer = MemberOptimizers(model, configs)
    schedulers = [_make_scheduler(c, o) for c, o in zip(configs, optimizer.optimizers)]
    generators = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
    histories: list[list[dict[str, Any]]] = [[] for _ in configs]
    if checkpoints is not None:
        _resume(model, optimizer, schedulers, generators, histories, configs, checkpoints, device)
    lr_tensors = [_prepare_step(run, o, device) for o in optimizer.optimizers]
    step_class = GraphedStep if run.cuda_graph else EagerStep
    step = step_class(model, optimizer, label_smoothing=config.label_smoothing, bf16=run.bf16,
                      channels_last=False, batch_size=config.batch_size, members=len(configs))

    def capture(m: int) -> Callable[[], dict[str, Any]]:
        return lambda: _copy(_checkpoint(configs[m], histories[m], model.member_state(m), optimizer.optimizers[m],
                                         schedulers[m], generators[m], device))

    live = [not (h and h[-1]["status"] == "diverged") for h in histories]
    status = ["completed" if alive else "diverged" for alive in live]
    setup_s = time.perf_counter() - entered
    for epoch in range(len(histories[0]), config.epochs):
        if not any(live):
            break
        start = time.perf_counter()
        lrs = [float(o.param_groups[0]["lr"]) for o in optimizer.optimizers]
        model.train()
        step.start_epoch()
        batches = _member_batches(train, config.batch_size, generators, augment)
        if progress is not None:
            batches = progress(batches, total=math.ceil(len(train) / config.batch_size),
                               totals=lambda: tuple(sum(values) / len(configs) for values in step.totals()))
        for images, labels in batches:
            step(images, labels)
        loss_sums, corrects = step.totals()
        train_time = time.perf_counter() - start
        scores = _evaluate(model, val, batch_size=config.eval_batch_size, bf16=run.bf16, channels_last=False,
                           num_classes=data.num_classes, members=len(configs))
        for member_optimizer, scheduler, tensors in zip(optimizer.optimizers, schedulers, lr_tensors):
            scheduler.step()
            if tensors is not None:
                _keep_lr_tensors(member_optimizer, tensors)
        reports = []
        for m in (m for m in range(len(configs)) if live[m]):
            train_loss = loss_sums[m] / len(train)
            # As fit: a non-finite training loss reports no validation (fit skips it), NaN and 0.
            val_loss, val_acc = (scores[m].loss, scores[m].accuracy) if math.isfinite(train_loss) else (math.nan, 0.0)
            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            if diverged:
                status[m], live[m] = "diverged", False
            last = epoch + 1 == config.epochs
            histories[m].append({
                "epoch": epoch + 1, "train_loss": train_loss, "train_acc": corrects[m] / len(train),
                "val_loss": val_loss, "val_acc": val_acc, "lr": lrs[m], "epoch_time_s": time.perf_counter() - start,
                # The member's share of the fused throughput, so per-trial figures add up as they do for
                # trials sharing a GPU.
                "images_per_s": len(train) / train_time, "setup_s": setup_s,
                "status": "diverged" if diverged else ("completed" if last else "running")})
            reports.append((m, dict(histories[m][-1]), EpochState(capture(m))))
        if on_epoch is not None:
            on_epoch(reports)
    return [FitResult(status=status[m], history=histories[m], model=model.member(m, build), config=configs[m],
                      device=device, step=step.ran) for m in range(len(configs))]


def _member_batches(train, batch_size: int, generators: list[torch.Generator], augment: Augment | None):
    """(M, B, C, H, W) images and (M, B) labels: batch i of every member's own shuffled, augmented epoch."""
    epochs = [iterate_batches(train, batch_size, shuffle=True, generator=g, augment=augment) for g in generators]
    for batches in zip(*epochs):
        yield torch.stack([images for images, _ in batches]), torch.stack([labels for _, labels in batches])


def _check_configs(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    configs = list(configs)
    if not configs:
        raise ValueError("nothing to train: fused training needs at least one config")
    first = configs[0].to_dict()
    for config in configs[1:]:
        other = config.to_dict()
        differ = sorted(k for k in first if k not in TRIAL_KEYS and first[k] != other[k])
        if differ:
            key = differ[0]
            raise ValueError(f"fused trials share everything but {', '.join(TRIAL_KEYS)}; {key} differs "
                             f"({first[key]!r} and {other[key]!r})")
    dicts = [c.to_dict() for c in configs]
    if any(dicts.count(d) > 1 for d in dicts):
        raise ValueError("the same trial twice: fused trials must differ (in their seed, say)")
    for name in ("compile", "channels_last"):
        if first[name]:
            raise ValueError(f"fused training does not support {name}; set {name}: false (or leave channels_last "
                             "automatic)")
    return configs


def _copy(state: Any) -> Any:
    """A snapshot: tensors copied (a member's state is read while its tensors keep training)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copy(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_copy(value) for value in state]
    return state


def _resume(model: StackedClassifier, optimizer: MemberOptimizers, schedulers, generators, histories, configs,
            checkpoints, device: torch.device) -> None:
    if len(checkpoints) != len(configs):
        raise ValueError(f"one checkpoint per trial: {len(configs)} trials, {len(checkpoints)} checkpoints")
    # Copies: an optimizer adopts the tensors of the state it loads and updates them in place.
    states = [_copy(c) if isinstance(c, dict) else load_checkpoint(c) for c in checkpoints]
    epochs = {state["epoch"] for state in states}
    if len(epochs) != 1:
        raise ValueError(f"the checkpoints are from different epochs ({sorted(epochs)}); "
                         "fused members advance together")
    for m, (config, state) in enumerate(zip(configs, states)):
        _check_resumable(config, state)  # the same config, seed included
        model.load_member_state(m, state["model"])
        histories[m].extend(_restore(state, optimizer.optimizers[m], schedulers[m], generators[m]))
    _restore_rngs(states[0], device)  # one dropout stream for all members
