"""Latent codecs for images: media [B, C, H, W] in [0, 1] <-> latents."""

from __future__ import annotations

import torch


class PixelCodec:
    """Pixel-space "latents": x = 2 * image - 1, so data lives in [-1, 1] like a
    VAE's scaled latents and the noise N(0, I) has a comparable scale."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.float() + 1) / 2).clamp(0, 1)
