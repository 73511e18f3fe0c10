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


class VAECodec:
    """A diffusers ``AutoencoderKL`` as the latent codec, with the model's scaling:
    latents = (mean (or a sample) of E(2 image - 1) - shift_factor) * scaling_factor, and the
    inverse on decode (the convention of the SD3 and FLUX pipelines)."""

    def __init__(self, vae, sample: bool = False):
        self.vae, self.sample = vae, sample
        self.scaling = vae.config.scaling_factor
        self.shift = vae.config.shift_factor or 0.0

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode((images * 2 - 1).to(self.vae.dtype)).latent_dist
        z = dist.sample() if self.sample else dist.mean
        return ((z - self.shift) * self.scaling).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype) / self.scaling + self.shift
        return (self.vae.decode(z, return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)


class NormalizedVAECodec:
    """A video VAE used on images, one frame each (diffusers' ``AutoencoderKLQwenImage``),
    with the per-channel normalisation the Qwen-Image pipelines apply:
    latents = (mode of E(2 image - 1) - latents_mean) / latents_std, and the inverse on
    decode. Latents are [B, z, h, w] (the frame axis is dropped)."""

    def __init__(self, vae):
        self.vae, c = vae, vae.config
        self.mean = torch.tensor(c.latents_mean, dtype=torch.float32).view(1, c.z_dim, 1, 1)
        self.std = torch.tensor(c.latents_std, dtype=torch.float32).view(1, c.z_dim, 1, 1)

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell along each side (the pipelines' ``vae_scale_factor``)."""
        return 2 ** len(self.vae.config.temperal_downsample)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = (images * 2 - 1).to(self.vae.device, self.vae.dtype)[:, :, None]
        z = self.vae.encode(x).latent_dist.mode()[:, :, 0]
        return (z - self.mean.to(z.device, z.dtype)) / self.std.to(z.device, z.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype) * self.std.to(latents.device, self.vae.dtype)
        z = z + self.mean.to(latents.device, self.vae.dtype)
        x = self.vae.decode(z[:, :, None], return_dict=False)[0][:, :, 0]
        return (x.float() / 2 + 0.5).clamp(0, 1)
