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

Only what is fused-specific lives here: the stacked network, its members' optimizers and batches, and
`FusedRuns`, the unit that trains them in the engine's one epoch loop (`cnnsearch.engine.train_units`, which
`fit`, `fit_fused` = `fit_group(fused=True)` and `fit_group(fused=False)` share).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .config import TrainConfig
from .data import Augment, Dataset, iterate_batches
from .engine import (EpochState, FitResult, ImageClassifier, Member, Rng, build_classifier, evaluate_members,
                     fit_group, make_optimizer, prepare_data)
from .steps import EagerStep, GraphedStep

__all__ = ["StackedClassifier", "MemberOptimizers", "FusedRuns", "fit_fused", "fit_seeds", "TRIAL_KEYS"]

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
        self.optimizers = [make_optimizer(config, views) for config, views in zip(configs, self.views)]

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


class FusedRuns:
    """Members trained as one stacked network: a unit of the engine's epoch loop (`cnnsearch.engine.Unit`).

    states: the members' checkpoints to resume from (`cnnsearch.engine.read_checkpoints`), or None.
    """

    def __init__(self, configs: Sequence[TrainConfig], data: Dataset, device: torch.device | str | None = None, *,
                 states: Sequence[dict[str, Any]] | None = None):
        configs = _check_configs(configs)
        self.config = config = configs[0]  # what they share
        self.data = prepare_data(config, data, device)
        device, run = self.data.device, self.data.execution
        rngs, nets = [], []
        for c in configs:
            rngs.append(Rng(c.seed, device))
            with rngs[-1].in_force():  # as fit: initial weights from the seed
                nets.append(build_classifier(config, data))
        self.model = StackedClassifier(nets).to(device)
        optimizer = MemberOptimizers(self.model, configs)
        self.members = [Member(c, o, device) for c, o in zip(configs, optimizer.optimizers)]
        # One stream of dropout masks for all members (vmap draws every member's from it): where the last
        # member's initialisation left its seed's stream.
        self.rng = rngs[-1]
        if states is not None:
            for m, (member, state) in enumerate(zip(self.members, states)):
                member.resume(state)  # the same config, seed included
                self.model.load_member_state(m, state["model"])
            self.rng.restore(states[0])
        for member in self.members:
            member.prepare_step(run)
        step_class = GraphedStep if run.cuda_graph else EagerStep
        self.step = step_class(self.model, optimizer, label_smoothing=config.label_smoothing, bf16=run.bf16,
                               channels_last=False, batch_size=config.batch_size, members=len(configs))
        self.images = len(self.data.train)
        self._build = lambda: build_classifier(config, data)

    def train_epoch(self, progress: Callable[..., Any] | None) -> list[tuple[float, float]]:
        config, train, count = self.config, self.data.train, len(self.members)
        self.data.set_backend_flags()
        self.model.train()
        self.step.start_epoch()
        batches = _member_batches(train, config.batch_size, [m.generator for m in self.members], self.data.augment)
        if progress is not None:
            batches = progress(batches, total=math.ceil(len(train) / config.batch_size),
                               totals=lambda: tuple(sum(values) / count for values in self.step.totals()))
        for images, labels in batches:
            self.step(images, labels)
        loss_sums, corrects = self.step.totals()
        return [(loss / len(train), correct / len(train)) for loss, correct in zip(loss_sums, corrects)]

    def validate(self, indices: list[int]) -> dict[int, tuple[float, float]]:
        if not indices:
            return {}
        run = self.data.execution
        scores = evaluate_members(self.model, self.data.val, members=len(self.members),
                                  batch_size=self.config.eval_batch_size, bf16=run.bf16, channels_last=False,
                                  num_classes=self.data.num_classes)
        return {i: (scores[i].loss, scores[i].accuracy) for i in indices}

    def weights(self, i: int) -> dict[str, torch.Tensor]:
        return self.model.member_state(i)

    def results(self) -> list[FitResult]:
        with torch.random.fork_rng(devices=[]):  # throwaway initial weights, replaced: the caller's RNG stays
            models = [self.model.member(m, self._build) for m in range(len(self.members))]
        return [FitResult(status=member.status, history=member.history, model=model, config=member.config,
                          device=self.data.device, step=self.step.ran) for member, model in zip(self.members, models)]


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
    """`fit_group(configs, data, fused=True, ...)`: the `configs` fused into one stacked network; one `FitResult`
    per config, in order, each as `fit` would return it (to float rounding). The configs may differ only in
    `TRIAL_KEYS` (the seed and the optimizer). on_epoch, checkpoints and progress as `fit_group`'s.

    Runs eagerly or with the CUDA-graph step (the default on CUDA); not compiled, and in the default memory
    layout: channels_last does not carry through vmap's grouped convolutions, so the automatic choice is off.
    """
    return fit_group(configs, data, fused=True, on_epoch=on_epoch, checkpoints=checkpoints, device=device,
                     progress=progress)


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
    for name in ("compile", "channels_last"):
        if first[name]:
            raise ValueError(f"fused training does not support {name}; set {name}: false (or leave channels_last "
                             "automatic)")
    return configs
