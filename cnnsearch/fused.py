"""Several seeds of one training config trained as one network: the repeats cnnsearch runs for every
point of a space, fused HFTA-style (Wang et al., MLSys 2021) into one process and one set of kernels.

The members' weights are stacked along a new leading dimension and the network runs under
`torch.func.vmap`, which turns the members' convolutions into one grouped convolution, their linear
layers into one batched matmul and their BatchNorms into one BatchNorm over all their channels. Small
recipes (batch 64) that leave a GPU idle between kernel launches get M times the work per launch.

What member m computes is what `fit` computes for its seed: the same initial weights (built after
`torch.manual_seed(seed)`, as `fit` builds them), the same data order and augmentation (a generator of
its own, seeded as `fit` seeds it), the same optimizer and schedule (one optimizer over the stacked
weights: every optimizer cnnsearch offers updates each element on its own, so it updates each member as
that member's own optimizer would). Two things differ: float rounding (grouped kernels sum in another
order) and dropout masks, which all members draw from one stream instead of each from its seed's.

A member's checkpoint has the format of `fit`'s, so `fit` resumes it as a run of its own, and
`fit_seeds` resumes from the members' checkpoints.
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
from .engine import (CHECKPOINT_FORMAT, EpochState, FitResult, ImageClassifier, _check_resumable, _evaluate,
                     _keep_lr_tensors, _make_optimizer, _make_scheduler, _prepare, _prepare_step, build_classifier,
                     load_checkpoint)
from .steps import EagerStep, GraphedStep, portable_optimizer_state, portable_scheduler_state

__all__ = ["StackedClassifier", "fit_seeds"]


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


def member_optimizer_state(state: dict[str, Any], m: int) -> dict[str, Any]:
    """Member m's part of an optimizer state over stacked weights, as its own optimizer would hold it:
    every per-weight tensor (moments, momentum) sliced; scalars (step counts) shared. Copies: a snapshot."""
    return {"state": {index: {key: (_slice(value, m) if isinstance(value, torch.Tensor) else value)
                              for key, value in values.items()}
                      for index, values in state["state"].items()},
            "param_groups": state["param_groups"]}


def _slice(tensor: torch.Tensor, m: int) -> torch.Tensor:
    return (tensor[m] if tensor.dim() else tensor).clone()


def stack_optimizer_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of `member_optimizer_state`: the members' states (same step counts) as one, in new
    tensors (the optimizer updates its state in place; the members' states stay as they were)."""
    first = states[0]
    stacked = {}
    for index, values in first["state"].items():
        stacked[index] = {key: (torch.stack([s["state"][index][key] for s in states]) if value.dim() else value.clone())
                          if isinstance(value, torch.Tensor) else value for key, value in values.items()}
    return {"state": stacked, "param_groups": first["param_groups"]}


def fit_seeds(config: TrainConfig, seeds: Sequence[int], data: Dataset, *,
              on_epoch: Callable[[list[tuple[int, dict[str, Any], EpochState]]], None] | None = None,
              checkpoints: Sequence[str | dict[str, Any]] | None = None,
              device: torch.device | str | None = None) -> list[FitResult]:
    """Train `config` once per seed in `seeds` (its own seed is ignored), fused into one stacked network;
    one `FitResult` per seed, in order, each as `fit` would return it for `config.replace(seed=seed)`.

    on_epoch(reports): after every epoch, once, with (m, metrics, state) for each member m still training (the
        metrics and state `fit`'s on_epoch gets; `state.save(path)` writes member m's checkpoint). One call
        for all members, so a caller can save their checkpoints together (the CLI holds Ctrl-C meanwhile):
        resuming needs every member at the same epoch. Raising from it stops every member.
    checkpoints: one per seed (paths or state dicts, from `fit` or from here), all after the same epoch.
    A member whose loss turns NaN or inf ends "diverged" and reports no more epochs; the others go on.
    Runs eagerly or with the CUDA-graph step (the default on CUDA); not compiled, and in the default memory
    layout: channels_last does not carry through vmap's grouped convolutions, so the automatic choice is off.
    """
    entered = time.perf_counter()
    seeds = _check_seeds(seeds)
    for name in ("compile", "channels_last"):
        if getattr(config, name):
            raise ValueError(f"fit_seeds does not support {name}; set {name}: false (or leave channels_last "
                             "automatic) to train seeds fused")
    configs = [config.replace(seed=seed) for seed in seeds]
    device, run, train, val, augment = _prepare(config, data, device)

    def build(seed: int | None = None) -> ImageClassifier:
        if seed is not None:
            torch.manual_seed(seed)  # as fit: initial weights from the seed
        return build_classifier(config, data)

    model = StackedClassifier([build(seed) for seed in seeds]).to(device)
    optimizer = _make_optimizer(config, model.parameters())
    scheduler = _make_scheduler(config, optimizer)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    histories: list[list[dict[str, Any]]] = [[] for _ in seeds]
    if checkpoints is not None:
        _resume(model, optimizer, scheduler, generators, histories, configs, checkpoints, device)
    lr_tensors = _prepare_step(run, optimizer, device)
    step_class = GraphedStep if run.cuda_graph else EagerStep
    step = step_class(model, optimizer, label_smoothing=config.label_smoothing, bf16=run.bf16,
                      channels_last=False, batch_size=config.batch_size, members=len(seeds))

    def capture(m: int) -> Callable[[], dict[str, Any]]:
        return lambda: {
            "format": CHECKPOINT_FORMAT, "config": configs[m].to_dict(), "epoch": len(histories[m]),
            "model": model.member_state(m),
            "optimizer": member_optimizer_state(portable_optimizer_state(optimizer.state_dict()), m),
            "scheduler": portable_scheduler_state(scheduler.state_dict()),
            "generator": generators[m].get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": list(histories[m]),
        }

    live = [not (h and h[-1]["status"] == "diverged") for h in histories]
    status = ["completed" if alive else "diverged" for alive in live]
    setup_s = time.perf_counter() - entered
    for epoch in range(len(histories[0]), config.epochs):
        if not any(live):
            break
        start = time.perf_counter()
        lr = float(optimizer.param_groups[0]["lr"])
        model.train()
        step.start_epoch()
        for images, labels in _member_batches(train, config.batch_size, generators, augment):
            step(images, labels)
        loss_sums, corrects = step.totals()
        train_time = time.perf_counter() - start
        scores = _evaluate(model, val, batch_size=config.eval_batch_size, bf16=run.bf16, channels_last=False,
                           num_classes=data.num_classes, members=len(seeds))
        scheduler.step()
        if lr_tensors is not None:
            _keep_lr_tensors(optimizer, lr_tensors)
        reports = []
        for m in (m for m in range(len(seeds)) if live[m]):
            train_loss = loss_sums[m] / len(train)
            # As fit: a non-finite training loss reports no validation (fit skips it), NaN and 0.
            val_loss, val_acc = (scores[m].loss, scores[m].accuracy) if math.isfinite(train_loss) else (math.nan, 0.0)
            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            if diverged:
                status[m], live[m] = "diverged", False
            last = epoch + 1 == config.epochs
            histories[m].append({
                "epoch": epoch + 1, "train_loss": train_loss, "train_acc": corrects[m] / len(train),
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "epoch_time_s": time.perf_counter() - start,
                # The member's share of the fused throughput, so per-trial figures add up as they do for
                # trials sharing a GPU.
                "images_per_s": len(train) / train_time, "setup_s": setup_s,
                "status": "diverged" if diverged else ("completed" if last else "running")})
            reports.append((m, dict(histories[m][-1]), EpochState(capture(m))))
        if on_epoch is not None:
            on_epoch(reports)
    ran = step.kind if not getattr(step, "failed", None) else f"eager (CUDA graph capture failed: {step.failed})"
    return [FitResult(status=status[m], history=histories[m], model=model.member(m, build), config=configs[m],
                      device=device, step=ran) for m in range(len(seeds))]


def _member_batches(train, batch_size: int, generators: list[torch.Generator], augment: Augment | None):
    """(M, B, C, H, W) images and (M, B) labels: batch i of every member's own shuffled, augmented epoch."""
    epochs = [iterate_batches(train, batch_size, shuffle=True, generator=g, augment=augment) for g in generators]
    for batches in zip(*epochs):
        yield torch.stack([images for images, _ in batches]), torch.stack([labels for _, labels in batches])


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("fit_seeds needs at least one seed")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seeds must be whole numbers, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ (a repeated seed trains the same run twice), got {seeds}")
    return seeds


def _resume(model: StackedClassifier, optimizer, scheduler, generators, histories, configs, checkpoints,
            device: torch.device) -> None:
    if len(checkpoints) != len(configs):
        raise ValueError(f"one checkpoint per seed: {len(configs)} seeds, {len(checkpoints)} checkpoints")
    states = [c if isinstance(c, dict) else load_checkpoint(c) for c in checkpoints]
    epochs = {state["epoch"] for state in states}
    if len(epochs) != 1:
        raise ValueError(f"the checkpoints are from different epochs ({sorted(epochs)}); "
                         "fused members advance together")
    for m, (config, state) in enumerate(zip(configs, states)):
        _check_resumable(config, state)  # the same config, seed included
        model.load_member_state(m, state["model"])
        generators[m].set_state(state["generator"])
        histories[m].extend(state["history"])
    optimizer.load_state_dict(stack_optimizer_states([s["optimizer"] for s in states]))
    scheduler.load_state_dict(states[0]["scheduler"])
    torch.set_rng_state(states[0]["torch_rng"])
    if device.type == "cuda" and states[0].get("cuda_rng") is not None:
        torch.cuda.set_rng_state(states[0]["cuda_rng"], device)
