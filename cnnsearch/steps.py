"""Training steps: one optimisation step per batch, run eagerly or replayed from a CUDA graph.

A ResNet-18 step on a batch of CIFAR images launches several hundred small kernels; on a GPU the host
(Python and kernel launches) sets the pace, not the card. `GraphedStep` records the whole step once
(forward, loss, backward, optimizer update and the epoch's running sums) as a CUDA graph and replays it
with one launch per batch. It computes what `EagerStep` computes, with the same model, loss and
optimizer update; only the batch is first copied into the static buffers the graph reads.

Both keep the epoch's loss and accuracy sums on the device, so the host never waits inside an epoch.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EagerStep", "GraphedStep", "prepare_optimizer_for_graphs", "portable_optimizer_state",
           "portable_scheduler_state"]


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device`, or nothing. The cast cache is off: inside a CUDA graph a cached
    cast would be captured once and never refreshed after the weights change."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


class EagerStep:
    """One optimisation step per call, as plain PyTorch.

    model: the network the step trains (possibly `torch.compile`d); eager_model: the same network
    uncompiled, used for batches of another size (the epoch's last, partial batch), so a compiled model
    sees one shape only and is never recompiled.
    """

    kind = "eager"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, label_smoothing: float,
                 bf16: bool, channels_last: bool, batch_size: int, eager_model: nn.Module | None = None,
                 members: int | None = None):
        self.model, self.eager_model, self.optimizer = model, eager_model or model, optimizer
        self.label_smoothing, self.bf16, self.channels_last = label_smoothing, bf16, channels_last
        self.batch_size = batch_size
        # members=M: `model` is M stacked networks (cnnsearch.fused) taking (M, B, C, H, W) batches.
        self.members = members
        shape = () if members is None else (members,)
        self.device = next(model.parameters()).device
        self.loss_sum = torch.zeros(shape, device=self.device, dtype=torch.float64)  # sum of per-image losses
        self.correct = torch.zeros(shape, device=self.device, dtype=torch.int64)  # images classified right

    def start_epoch(self) -> None:
        # In place: a captured graph keeps adding into these very tensors.
        self.loss_sum.zero_()
        self.correct.zero_()

    def totals(self) -> tuple[Any, Any]:
        """(sum of losses, correct predictions) since `start_epoch`, as numbers (lists of M with members);
        waits for the device."""
        return self.loss_sum.tolist(), self.correct.tolist()

    @property
    def ran(self) -> str:
        """The step that trained, for FitResult.step: "eager", "cuda_graph" or why capture fell back to eager."""
        return self.kind

    def full(self, images: torch.Tensor) -> bool:
        """Whether `images` is a full batch (the shape a compiled model or a graph was made for)."""
        return images.shape[0 if self.members is None else 1] == self.batch_size

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """images (B, C, H, W) uint8, labels (B,) int64, on the model's device; with members,
        (M, B, C, H, W) and (M, B): member m trains on its own batch [m]."""
        self._step(self.model if self.full(images) else self.eager_model, images, labels)

    def _step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.bf16):
            logits = model(images)  # (B, K), or (M, B, K) with members
            loss, batch_loss = self._loss(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += batch_loss
        self.correct += (logits.argmax(-1) == labels).sum(-1)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to minimise, the batch's sum of per-image losses: a scalar or one per member)."""
        if self.members is None:
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
            return loss, loss.detach().double() * labels.numel()
        per_image = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none",
                                    label_smoothing=self.label_smoothing).view(labels.shape)  # (M, B)
        # The sum of the members' mean losses: member m's weights get exactly the gradient of its own mean
        # loss, as in a run of its own (no member's loss reaches another's weights).
        return per_image.mean(1).sum(), per_image.detach().double().sum(1)


class GraphedStep(EagerStep):
    """`EagerStep` whose full-size batches replay one captured CUDA graph.

    The first `WARMUP_STEPS` full batches train eagerly on a side stream (they are real steps, not
    discarded work): cuDNN and cuBLAS choose their algorithms and workspaces there and the optimizer
    creates its state, all of which must exist before capture. The next batch is captured and replayed;
    every later full batch is copied into the graph's input buffers and replayed. A batch of another size
    (the epoch's last, partial one) trains eagerly on the same weights and optimizer state, so an epoch
    sees every image, as in eager training. If capture fails the run warns once and stays eager.
    """

    kind = "cuda_graph"
    WARMUP_STEPS = 3

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.device.type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, got {self.device}")
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed: str | None = None  # why capture failed, if it did
        self._stream = torch.cuda.Stream(self.device)
        self._warm = 0
        self._images: torch.Tensor | None = None  # (B, C, H, W) uint8 (or (M, B, ...)): the graph's input buffers
        self._labels: torch.Tensor | None = None  # (B,) int64 (or (M, B))

    @property
    def ran(self) -> str:
        return self.kind if self.failed is None else f"eager (CUDA graph capture failed: {self.failed})"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if not self.full(images) or self.failed is not None:
            return self._step(self.model if self.full(images) else self.eager_model, images, labels)
        if self.graph is None and not self._capture(images, labels):
            return
        self._images.copy_(images)
        self._labels.copy_(labels)
        self.graph.replay()

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> bool:
        """Warm up or capture; True when the graph exists and this batch is still to be replayed."""
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(stream), warnings.catch_warnings():
                # The warm-up steps run a capturable optimizer uncaptured on purpose.
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                if self._warm < self.WARMUP_STEPS:
                    self._warm += 1
                    self._step(self.model, images, labels)
                    return False
                self._images, self._labels = torch.empty_like(images), torch.empty_like(labels)
                # Backward inside the capture allocates the gradients from the graph's private pool; the
                # replays write them there and the captured optimizer step reads them from there.
                self.optimizer.zero_grad(set_to_none=True)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    self._step(self.model, self._images, self._labels)
                self.graph = graph
        except Exception as exc:  # noqa: BLE001 - any capture failure: train on eagerly, never stop the run
            self.failed = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            warnings.warn(f"CUDA graph capture failed, training eagerly: {self.failed}", RuntimeWarning, stacklevel=2)
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self._step(self.model, images, labels)
            return False
        finally:
            torch.cuda.current_stream(self.device).wait_stream(stream)
        return True


# --- optimizer state that a graph can update in place ------------------------------------------------
# A captured optimizer step reads its learning rate and step count from device tensors at each replay; a
# Python float would be baked into the graph, and the scheduler's per-epoch decay would never reach it.
_GRAPH_FLAGS = {"SGD": {"fused": True}, "Adam": {"fused": True, "capturable": True},
                "AdamW": {"fused": True, "capturable": True}, "Adamax": {"capturable": True, "foreach": True}}
# The eager defaults these flags return to in a checkpoint, so a checkpoint is the same whichever step made it.
_EAGER_FLAGS = {"fused": None, "capturable": False, "foreach": None}


def prepare_optimizer_for_graphs(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Switch an optimizer (fresh, or just loaded from a checkpoint) to its graph-safe form in place:
    the learning rate as a device tensor that schedulers fill in place, fused or capturable kernels, and
    step counts on the device."""
    flags = _GRAPH_FLAGS.get(type(optimizer).__name__)
    if flags is None:
        raise ValueError(f"no CUDA-graph form for optimizer {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        group.update(flags)
        if flags.get("fused"):
            group["foreach"] = False  # fused and foreach are exclusive
    for state in optimizer.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].to(device=device, dtype=torch.float32)
    optimizer._need_device_dtype_check_for_fused = True  # Adam/SGD check fused's devices once, on first step


def portable_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict in the eager form (float lr, default kernel flags, step counts on the
    CPU), so a checkpoint written by a graphed run resumes eagerly and the other way round."""
    groups = []
    for group in state["param_groups"]:
        group = dict(group)
        for key in ("lr", "initial_lr"):
            if isinstance(group.get(key), torch.Tensor):
                group[key] = float(group[key])
        group.update({k: v for k, v in _EAGER_FLAGS.items() if k in group})
        groups.append(group)
    per_param = {}
    for index, values in state["state"].items():
        values = dict(values)
        if isinstance(values.get("step"), torch.Tensor):
            values["step"] = values["step"].detach().to("cpu", torch.float32)
        per_param[index] = values
    return {"state": per_param, "param_groups": groups}


def portable_scheduler_state(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler state dict with tensor learning rates (from a graph-safe optimizer) as floats."""
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return float(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in state.items()}
