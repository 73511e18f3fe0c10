"""Latent codecs for video: :class:`Video` <-> latents [B, C, F, H, W]."""

from __future__ import annotations

import torch

from alignflow.modalities.video.video import Video


class PixelVideoCodec:
    """Pixel-space "latents": x = 2 * frames - 1 in Wan's layout [B, C, F, H, W]."""

    def __init__(self, fps: float = 8.0):
        self.fps = fps

    def encode(self, video: Video) -> torch.Tensor:
        return video.to_model()

    def decode(self, latents: torch.Tensor) -> Video:
        return Video.from_model(latents, self.fps)


class WanVAECodec:
    """diffusers' ``AutoencoderKLWan`` with the normalisation ``WanPipeline`` applies:
    latents = (mean of E(2 frames - 1) - latents_mean) / latents_std, per channel, and the
    inverse before decoding. The causal VAE maps 1 + 4k frames to 1 + k latent frames
    (``scale_factor_temporal`` 4) and 8 x 8 pixels to one latent cell.

    ``tiling`` and ``slicing`` are the VAE's memory controls (decode in spatial tiles;
    one clip of the batch at a time)."""

    def __init__(self, vae, fps: float = 16.0, tiling: bool = False, slicing: bool = False):
        self.vae, self.fps = vae, fps
        c = vae.config
        self.mean = torch.tensor(c.latents_mean, dtype=torch.float32).view(1, c.z_dim, 1, 1, 1)
        self.std = torch.tensor(c.latents_std, dtype=torch.float32).view(1, c.z_dim, 1, 1, 1)
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @property
    def scale_factor_temporal(self) -> int:
        return self.vae.config.scale_factor_temporal

    @property
    def scale_factor_spatial(self) -> int:
        return self.vae.config.scale_factor_spatial

    @torch.no_grad()
    def encode(self, video: Video) -> torch.Tensor:
        x = video.to_model().to(self.vae.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode().float()
        return (z - self.mean.to(z.device)) / self.std.to(z.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> Video:
        z = latents.float() * self.std.to(latents.device) + self.mean.to(latents.device)
        x = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return Video.from_model(x.cpu(), self.fps)
