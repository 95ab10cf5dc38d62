"""The training step: how `fit` chooses it, the graph-safe optimizer form and its portable checkpoints, and
(on a CUDA machine only) that the CUDA-graph step trains like the eager one and resumes across the two."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cnnsearch.config import TrainConfig
from cnnsearch.engine import Execution, fit
from cnnsearch.steps import portable_optimizer_state, prepare_optimizer_for_graphs

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("flags, device, expected", [
    ({}, CPU, (False, False, False)),
    ({}, CUDA, (True, True, True)),
    ({"cuda_graph": False}, CUDA, (True, True, False)),
    ({"bf16": False, "channels_last": False}, CUDA, (False, False, True)),
    ({"bf16": True}, CPU, (True, False, False)),
])
def test_execution_defaults_follow_the_device(flags, device, expected):
    run = Execution.resolve(TrainConfig(**flags), device)
    assert (run.bf16, run.channels_last, run.cuda_graph) == expected


def test_cuda_graph_on_a_cpu_is_refused_with_a_fix():
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device.*drop --cuda-graph"):
        Execution.resolve(TrainConfig(cuda_graph=True), CPU)


def test_train_cli_cuda_graph_on_cpu_is_one_line_exit_2(capsys):
    from cnnsearch.train import main

    with pytest.raises(SystemExit) as exc:
        main(["--cuda-graph", "--device", "cpu", "--no-download", "--epochs", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "cuda_graph needs a CUDA device" in err


def _trained_optimizer(kind: str):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = {"adam": lambda p: torch.optim.Adam(p, lr=1e-2), "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2),
                 "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
                 "adamax": lambda p: torch.optim.Adamax(p, lr=2e-3)}[kind](net.parameters())
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
    return net, optimizer


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "adamax"])
def test_graph_form_round_trips_to_the_eager_checkpoint(kind):
    """A checkpoint holds the eager form whichever step wrote it: float lr, default kernel flags, step
    counts on the CPU. Preparing for graphs and exporting again gives back exactly the eager state."""
    net, optimizer = _trained_optimizer(kind)
    eager = copy.deepcopy(optimizer.state_dict())
    prepare_optimizer_for_graphs(optimizer, CPU)
    group = optimizer.param_groups[0]
    # The graph reads a float32 lr: the same rate to 1e-7, which is all a checkpoint then keeps.
    assert isinstance(group["lr"], torch.Tensor) and group["lr"].dtype == torch.float32
    assert group.get("fused") or group.get("capturable")
    portable = portable_optimizer_state(optimizer.state_dict())
    lrs = [g.pop("lr") for g in portable["param_groups"]], [g.pop("lr") for g in eager["param_groups"]]
    assert all(isinstance(a, float) and math.isclose(a, b, rel_tol=1e-7) for a, b in zip(*lrs))
    assert portable["param_groups"] == eager["param_groups"]
    for index, values in eager["state"].items():
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(portable["state"][index][key]), torch.as_tensor(value)), (index, key)
            if isinstance(value, torch.Tensor):
                assert portable["state"][index][key].device == value.device


def test_scheduler_decays_the_tensor_lr_in_place():
    """A captured step reads the lr tensor at each replay: the scheduler must change that tensor, not
    replace it (the engine repairs a replacement, see _keep_lr_tensors)."""
    from cnnsearch.engine import _keep_lr_tensors

    _, optimizer = _trained_optimizer("adam")
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    prepare_optimizer_for_graphs(optimizer, CPU)
    tensor = optimizer.param_groups[0]["lr"]
    scheduler.step()
    _keep_lr_tensors(optimizer, [tensor])
    assert optimizer.param_groups[0]["lr"] is tensor and math.isclose(float(tensor), 5e-3, rel_tol=1e-6)
    optimizer.param_groups[0]["lr"] = 1e-4  # what an older scheduler did: assign a float
    _keep_lr_tensors(optimizer, [tensor])
    assert optimizer.param_groups[0]["lr"] is tensor and math.isclose(float(tensor), 1e-4, rel_tol=1e-6)


# --- on a GPU ----------------------------------------------------------------------------------------
def _gpu_config(**changes) -> TrainConfig:
    # 1,010 images at batch 100: every epoch ends with a partial batch of 10, which trains eagerly.
    base = dict(model="resnet18", width=0.25, train_subset=101, val_size=500, batch_size=100, epochs=3,
                lr_schedule="exponential", lr_decay=0.5, device="cuda", bf16=False)
    return TrainConfig(**{**base, **changes})


@needs_cuda
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamax"])
def test_cuda_graph_trains_like_eager(cifar10, optimizer):
    """Same config, fp32: the graphed step's losses match eager ones to 2% (cuDNN picks other algorithms
    under autotuning, so the two are not bit-equal), with the scheduler's lr reaching the captured step."""
    eager = fit(_gpu_config(optimizer=optimizer, cuda_graph=False), cifar10)
    graphed = fit(_gpu_config(optimizer=optimizer, cuda_graph=True), cifar10)
    assert eager.step == "eager" and graphed.step == "cuda_graph"
    for e, g in zip(eager.history, graphed.history):
        assert math.isclose(e["train_loss"], g["train_loss"], rel_tol=0.02), (e, g)
        assert math.isclose(e["lr"], g["lr"], rel_tol=1e-6)  # the scheduler reached the captured step
        assert abs(e["val_acc"] - g["val_acc"]) < 0.06


@needs_cuda
def test_checkpoints_resume_across_eager_and_graph(cifar10, tmp_path):
    """A checkpoint written by a graphed run resumes eagerly and the other way round."""
    saved = {}

    def keep(metrics, state):
        saved[metrics["epoch"]] = state.state_dict()

    fit(_gpu_config(cuda_graph=True, epochs=2), cifar10, on_epoch=keep)
    resumed = fit(_gpu_config(cuda_graph=False, epochs=3), cifar10, checkpoint=saved[2])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3] and resumed.step == "eager"
    again = fit(_gpu_config(cuda_graph=True, epochs=3), cifar10, checkpoint=saved[1])
    assert [h["epoch"] for h in again.history] == [1, 2, 3] and again.step == "cuda_graph"
    assert all(math.isfinite(h["train_loss"]) for h in again.history)
    assert math.isclose(again.history[1]["lr"], saved[2]["history"][1]["lr"], rel_tol=1e-6)


class _Constant(nn.Module):
    """Predicts class 0 for every image (a bias the optimizer can move); `sync` makes forward read a value
    back to the host, which CUDA graph capture forbids."""

    def __init__(self, sync: bool = False):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([5.0, 0.0]))
        self.sync = sync

    def forward(self, images):
        if self.sync:
            float(self.bias[0])  # a host read: illegal while a graph is being captured
        return self.bias.expand(images.shape[0], 2) + 0 * images.float().mean((1, 2, 3), keepdim=False)[:, None]


def _run_graphed(model, batches: list[int]):
    from cnnsearch.steps import GraphedStep

    model = model.cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    prepare_optimizer_for_graphs(optimizer, CUDA)
    step = GraphedStep(model, optimizer, label_smoothing=0.0, bf16=False, channels_last=False, batch_size=8)
    step.start_epoch()
    for size in batches:
        step(torch.zeros(size, 1, 4, 4, dtype=torch.uint8, device="cuda"), torch.zeros(size, dtype=torch.long,
                                                                                        device="cuda"))
    return step


@needs_cuda
def test_graphed_step_trains_every_image_including_the_partial_batch():
    step = _run_graphed(_Constant(), [8] * 6 + [3])  # 3 warm-up steps, capture, replays, then a partial batch
    assert step.graph is not None and step.failed is None
    assert step.totals()[1] == 6 * 8 + 3  # every image counted once: the replays and the eager partial batch


@needs_cuda
def test_capture_failure_falls_back_to_eager_training():
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed, training eagerly"):
        step = _run_graphed(_Constant(sync=True), [8] * 6)
    assert step.graph is None and step.failed
    assert step.totals()[1] == 6 * 8  # the batch of the failed capture was trained too
