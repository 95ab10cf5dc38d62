"""Augment: random crop with zero padding and horizontal flip, on a whole uint8 batch at once (as airbench does)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Batched data augmentation for (B, C, H, W) uint8 images on any device.

    Each image is zero-padded by `crop_padding` pixels on every side and cropped back to H x W at a random
    offset, then mirrored left-right with probability 0.5 when `flip` is set. Pixels stay uint8: normalisation
    belongs to the model wrapper. A batch of 64 CIFAR images takes under 1 ms on one CPU core.
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
        if p:
            offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=generator.device).to(device)
            padded = F.pad(images, (p, p, p, p)).contiguous()  # (B, C, H + 2p, W + 2p), zeros around
            # windows[i, y, x] is the H x W crop of image i whose top-left corner is (y, x): a view, no copy.
            # Indexing just its three leading dims is ~2x faster on the CPU than a row and column index per pixel.
            s_b, s_c, s_h, s_w = padded.stride()
            windows = padded.as_strided((b, 2 * p + 1, 2 * p + 1, c, h, w), (s_b, s_h, s_w, s_c, s_h, s_w))
            images = windows[torch.arange(b, device=device), offsets[0], offsets[1]]  # (B, C, H, W)
        if self.flip:
            mirror = torch.rand(b, generator=generator, device=generator.device).to(device) < 0.5  # (B,)
            mirror = mirror.view(b, 1, 1, 1).to(torch.uint8)  # 1 = mirror this image
            # Select by arithmetic: exact in uint8 despite wrapping (x + (f - x) * 1 = f), vectorised on the CPU
            # where torch.where on uint8 is not (~2.5x slower), and free of host syncs on CUDA.
            images = images + (images.flip(3) - images) * mirror
        return images
