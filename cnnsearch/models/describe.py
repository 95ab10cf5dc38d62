"""Size and cost of a model: parameter counts and forward FLOPs for one image."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["describe_model"]


def describe_model(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """{"params", "trainable_params", "flops"} for `model` on one (C, H, W) image.

    FLOPs are counted by torch's FlopCounterMode on a forward pass of a batch of 1 in eval mode
    under no_grad, on the model's own device and dtype (a multiply-add counts as 2 FLOPs). The
    train/eval mode of every submodule is restored afterwards.
    """
    if len(input_shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (channels, height, width), positive ints; got {input_shape!r}")
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = {module: module.training for module in model.modules()}
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)  # (1, C, H, W)
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for module, training in modes.items():
            module.training = training
    return {"params": params, "trainable_params": trainable, "flops": int(counter.get_total_flops())}
