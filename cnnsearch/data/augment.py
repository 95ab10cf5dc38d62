"""Augment: random crop with zero padding and horizontal flip, on a whole uint8 batch at once (as airbench does)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Batched data augmentation for (B, C, H, W) uint8 images on any device.

    Each image is zero-padded by `crop_padding` pixels on every side and cropped back to H x W at a random
    offset, then mirrored left-right with probability 0.5 when `flip` is set. Crop and flip are one gather, so
    the cost is a single pass over the batch. Pixels stay uint8: normalisation belongs to the model wrapper.
    """

    crop_padding: int = 4  # pixels of zero padding before the random crop; 0 turns cropping off
    flip: bool = True  # mirror each image horizontally with probability 0.5

    def __post_init__(self) -> None:
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"Augment.crop_padding must be a whole number of pixels >= 0, got {self.crop_padding!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"Augment.flip must be True or False, got {self.flip!r}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copy of `images` (B, C, H, W) uint8, on the same device.

        Random numbers are drawn from `generator` on its own device (crop offsets, then flips), so a given
        generator state gives the same result.
        """
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"Augment expects (B, C, H, W) uint8 images, got {images.dtype} {tuple(images.shape)}")
        if self.crop_padding == 0 and not self.flip:
            return images
        b, c, h, w = images.shape
        p = self.crop_padding
        device = images.device
        rows = torch.arange(h, device=device).expand(b, h)  # (B, H) source row of each output row
        cols = torch.arange(w, device=device).expand(b, w)  # (B, W) source column of each output column
        if p:
            images = F.pad(images, (p, p, p, p))  # (B, C, H + 2p, W + 2p), zeros around
            offsets = torch.randint(0, 2 * p + 1, (2, b, 1), generator=generator, device=generator.device).to(device)
            rows = rows + offsets[0]  # top edge of each crop window, 0..2p in padded coordinates
            cols = cols + offsets[1]
        if self.flip:
            mirror = torch.rand(b, 1, generator=generator, device=generator.device).to(device) < 0.5  # (B, 1)
            cols = torch.where(mirror, cols.flip(1), cols)
        # out[i, k, y, x] = images[i, k, rows[i, y], cols[i, x]]: index tensors broadcast to (B, C, H, W)
        batch = torch.arange(b, device=device).view(b, 1, 1, 1)
        channel = torch.arange(c, device=device).view(1, c, 1, 1)
        return images[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
