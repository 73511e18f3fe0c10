"""What FLUX.1 and Qwen-Image policies share: latents packed into tokens.

Both transformers see 2 x 2 patches of the VAE latent as tokens: x is [B, (H/2)(W/2),
4C], packed and unpacked with the pipeline's own ``_pack_latents`` /
``_unpack_latents``. The policy's latents *are* the packed tensor (the kernels reduce
over every non-batch dim, so the layout does not matter to them). Both schedules are
linspace(1, 1/N, N) through the pipeline's scheduler, shifted with mu =
calculate_shift(image tokens) as the pipelines compute it.

A subclass sets ``pipeline``, ``transformer``, ``scheduler``, ``codec`` (on unpacked
latents), ``latent_hw``, ``channels``, ``resolution`` and ``other_modules``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignflow.adapters.common import DiffusersExport
from alignflow.sdk.random import Generators, randn

# Attention projections of the joint (double-stream) blocks: the LoRA targets Flow-GRPO
# uses for SD3.5 and FLUX, the same names in Qwen-Image's blocks.
JOINT_ATTENTION_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)


class PackedLatentPolicy(DiffusersExport):
    modality = "image"
    default_lora_targets = JOINT_ATTENTION_LORA_TARGETS

    pipeline: Any
    transformer: nn.Module
    scheduler: Any
    codec: Any
    latent_hw: tuple[int, int]
    channels: int
    resolution: int
    other_modules: dict[str, nn.Module]

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: torch.device | str) -> PackedLatentPolicy:
        self.transformer.to(device)
        for m in self.other_modules.values():
            m.to(device)
        prompt_encoder = getattr(self, "prompt_encoder", None)
        if hasattr(prompt_encoder, "device"):  # a PromptCache
            prompt_encoder.device = torch.device(device)
        return self

    def noise(self, batch_size: int, generator: Generators) -> torch.Tensor:
        """Gaussian latents [B, C, H, W] drawn as the pipelines draw them, then packed."""
        h, w = self.latent_hw
        z = randn((batch_size, self.channels, h, w), generator, device=self.device)
        return self.pipeline._pack_latents(z, batch_size, self.channels, h, w)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        c = self.scheduler.config
        seq_len = (self.latent_hw[0] // 2) * (self.latent_hw[1] // 2)
        mu = calculate_shift(
            seq_len,
            c.get("base_image_seq_len", 256),
            c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.5),
            c.get("max_shift", 1.15),
        )
        sigmas = (
            None if c.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / num_steps, num_steps)
        )
        self.scheduler.set_timesteps(num_steps, sigmas=sigmas, mu=mu)
        return self.scheduler.sigmas.to(torch.float32).clone()

    def timestep(self, sigma: torch.Tensor, B: int, device: torch.device) -> torch.Tensor:
        """The transformer's ``timestep`` input, sigma in [0, 1], computed as (1000 sigma) /
        1000 in the transformer's dtype exactly as the pipelines do, so that a rollout
        with noise level 0 reproduces their latents bit for bit."""
        sigma = torch.as_tensor(sigma, device=device, dtype=torch.float32).expand(B)
        dtype = next(self.transformer.parameters()).dtype
        return (sigma * self.scheduler.config.num_train_timesteps).to(dtype) / 1000

    def unpacked(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents -> the VAE's [B, C, H, W] (a one-frame video VAE's frame axis
        dropped)."""
        scale = self.pipeline.vae_scale_factor
        z = self.pipeline._unpack_latents(latents, self.resolution, self.resolution, scale)
        return z[:, :, 0] if z.ndim == 5 else z

    def decode(self, latents: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.codec.decode(self.unpacked(latents))

    def to_latents(self, media: torch.Tensor) -> torch.Tensor:
        z = self.codec.encode(media.to(self.device))
        h, w = self.latent_hw
        return self.pipeline._pack_latents(z, z.shape[0], self.channels, h, w)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer}

    def save_pretrained(self, folder: str | Path) -> None:
        self.pipeline.save_pretrained(folder)  # the pipeline holds the unwrapped transformer
