"""FLUX.1 as a FlowPolicy, through diffusers' ``FluxPipeline`` components.

FLUX differs from SD3 in three ways this adapter hides from the trainer:

- **Packed latents.** The transformer sees 2x2 patches of the VAE latent as tokens:
  x is [B, (H/2)(W/2), 4C], with position ids ``img_ids`` [(H/2)(W/2), 3] and
  ``txt_ids`` [T, 3]. The policy's latents *are* the packed tensor (the kernels
  reduce over every non-batch dim, so the layout does not matter to them);
  ``decode`` unpacks before the VAE (:mod:`~alignflow.adapters.image.packed`, shared
  with Qwen-Image-Edit).
- **Guidance embedding instead of CFG** (FLUX.1-dev): the guidance scale is an input
  of the transformer; there is no unconditional branch and one call per step.
- **Resolution-dependent shift**: the schedule is linspace(1, 1/N, N) shifted with
  mu = calculate_shift(image tokens), as ``FluxPipeline`` computes it.

The transformer takes ``timestep = sigma`` (it multiplies by 1000 inside); it is
computed as (1000 sigma) / 1000 exactly as the pipeline does, so that a rollout with
noise level 0 reproduces the pipeline's latents bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignflow.adapters.common import visiting
from alignflow.adapters.image.packed import PackedLatentPolicy
from alignflow.modalities.image.codec import VAECodec
from alignflow.sdk.batching import SHARED
from alignflow.sdk.errors import ConfigError


@dataclass
class FluxCondition:
    """Attributes:
    embeds: [B, T, D] T5 tokens; pooled: [B, P] CLIP pooled vector;
    text_ids: [T, 3] text position ids (shared by the batch);
    reference: [B, T_img, 4C] packed latents of each sample's source image (FLUX.1
    Kontext), None for text-to-image."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor = field(metadata=SHARED)
    reference: torch.Tensor | None = None


class FluxPolicy(PackedLatentPolicy):
    def __init__(
        self,
        pipe: Any,
        resolution: int,
        max_sequence_length: int = 512,
        offload_text_encoders: bool = False,
        encode_prompts_once: bool = False,
        reference: bool = False,
        source_root: str = "",
    ):
        """``reference``: the model edits a source image (FLUX.1 Kontext): each prompt's
        metadata names it (``source``, relative to ``source_root``), resized to
        ``resolution``; its packed latents follow the image tokens, with position ids
        whose first coordinate is 1, and only the image tokens' velocity is kept."""
        self.pipeline, self.offload_text_encoders = pipe, offload_text_encoders
        self.encode_prompts_once = encode_prompts_once
        self.prompt_encoder: Any = self._encode_text  # (embeds, pooled) of prompts
        self.transformer = pipe.transformer
        self.scheduler, self.max_sequence_length = pipe.scheduler, max_sequence_length
        self.guidance_embeds = pipe.transformer.config.guidance_embeds
        scale = pipe.vae_scale_factor
        if resolution % (2 * scale):
            raise ConfigError("policy.resolution", resolution, f"a multiple of {2 * scale}")
        self.latent_hw = (resolution // scale, resolution // scale)
        self.channels = pipe.transformer.config.in_channels // 4
        self.resolution = resolution
        h, w = self.latent_hw
        self.img_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32)
        self.reference, self.sources = reference, None
        if reference:
            from alignflow.modalities.image.io import image_sources

            self.sources = image_sources((resolution, resolution), source_root)
            self.ref_ids = self.img_ids.clone()
            self.ref_ids[:, 0] = 1  # FluxKontextPipeline's ids of the source image tokens
        self.encoders = [pipe.text_encoder, pipe.text_encoder_2]
        self.other_modules = {"vae": pipe.vae} | (
            {}
            if offload_text_encoders
            else {"text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
        )
        self.codec = VAECodec(pipe.vae)  # on unpacked latents [B, C, H, W]

    def encode(
        self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> FluxCondition:
        embeds, pooled = self.prompt_encoder(list(prompts))
        # FluxPipeline.encode_prompt's text positions: zeros, one row per T5 token
        text_ids = torch.zeros(embeds.shape[1], 3, device=embeds.device, dtype=embeds.dtype)
        reference = self._references(metadata, len(prompts)) if self.reference else None
        return FluxCondition(embeds, pooled, text_ids, reference)

    def _references(self, metadata: Sequence[Mapping[str, Any]] | None, n: int) -> torch.Tensor:
        """The source images of ``metadata``'s rows, VAE-encoded (the posterior's mode,
        as FluxKontextPipeline encodes them) and packed: [B, T_img, 4C]."""
        return self.to_latents(torch.stack(self.sources.batch(metadata, n)))

    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        offload = self.offload_text_encoders  # CLIP and T5 visit the device to encode
        with torch.no_grad(), visiting(self.encoders, self.device, offload):
            embeds, pooled, _ = self.pipeline.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                device=self.device if offload else self.pipeline.text_encoder.device,
                max_sequence_length=self.max_sequence_length,
            )
        return embeds, pooled

    def prepare_prompts(self, prompts: Sequence[str], metadata: Any = None) -> None:
        """With ``encode_prompts_once``: every prompt of the run is encoded now, and CLIP-L
        and T5 are freed (the trainer calls this)."""
        if not self.encode_prompts_once:
            return
        from alignflow.adapters.common import PromptCache, free_text_encoders

        cache = PromptCache(self.prompt_encoder, self.device)
        cache.fill(prompts)
        self.prompt_encoder, self.encoders = cache, []
        names = ("text_encoder", "text_encoder_2")
        free_text_encoders(self.pipeline, names, self.other_modules)

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: FluxCondition, guidance: float = 1.0
    ) -> torch.Tensor:
        B, dtype = x.shape[0], next(self.transformer.parameters()).dtype
        timestep = self.timestep(sigma, B, x.device)
        g = torch.full((B,), float(guidance), device=x.device) if self.guidance_embeds else None
        hidden, ids = x.to(dtype), self.img_ids
        if cond.reference is not None:  # the source image's tokens after the image's
            hidden = torch.cat([hidden, cond.reference.to(dtype)], dim=1)
            ids = torch.cat([ids, self.ref_ids])
        v = self.transformer(
            hidden_states=hidden,
            timestep=timestep,
            guidance=g,
            pooled_projections=cond.pooled.to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            txt_ids=cond.text_ids.to(dtype),
            img_ids=ids.to(x.device, dtype),
            return_dict=False,
        )[0]
        return v[:, : x.shape[1]]


def load_flux_policy(
    path: Any,
    resolution: int = 512,
    dtype: str = "bfloat16",
    max_sequence_length: int = 512,
    attention: str = "auto",
    gradient_checkpointing: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload_text_encoders: bool = False,
    encode_prompts_once: bool = False,
) -> FluxPolicy:
    """FLUX.1 [dev] (guidance-distilled) or [schnell] from a local folder in diffusers
    layout, a hub id (``black-forest-labs/FLUX.1-dev`` when online) or a ``FluxPipeline``
    already built (cast to ``dtype``).

    ``sample.guidance`` is the guidance *embedding* (3.5 for dev); schnell has none and
    ignores it. ``max_sequence_length``: T5 tokens (512 dev, 256 schnell).
    ``gradient_checkpointing`` recomputes each transformer block in the backward pass;
    ``vae_tiling`` / ``vae_slicing`` decode in tiles / one image at a time;
    ``offload_text_encoders`` keeps CLIP-L and T5-XXL on the CPU between encodes;
    ``encode_prompts_once`` encodes a run's data.train and data.eval prompts at the start
    and frees them (2.1 MB of CPU memory per prompt in bf16; other prompts are refused)."""
    args = dict(locals())
    from diffusers import FluxPipeline

    return _load_flux(FluxPipeline, **args)


def load_flux_kontext_policy(
    path: Any,
    resolution: int = 512,
    source_root: str = "",
    dtype: str = "bfloat16",
    max_sequence_length: int = 512,
    attention: str = "auto",
    gradient_checkpointing: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload_text_encoders: bool = False,
    encode_prompts_once: bool = False,
) -> FluxPolicy:
    """FLUX.1 Kontext [dev] (image editing) from a local folder in diffusers layout, a
    hub id (``black-forest-labs/FLUX.1-Kontext-dev`` when online) or a
    ``FluxKontextPipeline``. Each prompt row names its source image in the ``source``
    column (relative paths against ``source_root``); sources are resized to
    ``resolution`` x ``resolution``, which the edit keeps. The other arguments are
    :func:`load_flux_policy`'s."""
    args = dict(locals())
    from diffusers import FluxKontextPipeline

    return _load_flux(FluxKontextPipeline, **args, reference=True)


def _load_flux(
    cls: Any,
    path: Any,
    resolution: int,
    dtype: str,
    max_sequence_length: int,
    attention: str,
    gradient_checkpointing: bool,
    vae_tiling: bool,
    vae_slicing: bool,
    offload_text_encoders: bool,
    encode_prompts_once: bool,
    source_root: str = "",
    reference: bool = False,
) -> FluxPolicy:
    from alignflow.adapters.common import (
        check_multiple,
        load_pipeline,
        memory_controls,
        pipeline_source,
        set_attention,
        vae_scale,
    )
    from alignflow.sdk.weights import resolve_dtype

    torch_dtype = resolve_dtype(dtype)
    source = pipeline_source(path, cls)
    check_multiple(
        "policy.resolution",
        resolution,
        2 * vae_scale(source),
        "2 x the VAE scale: latents pack 2 x 2",
    )
    pipe = load_pipeline(cls, source, torch_dtype)
    set_attention(pipe.transformer, attention)
    memory_controls(pipe, gradient_checkpointing, vae_tiling, vae_slicing)
    for name in ("text_encoder", "text_encoder_2", "vae"):
        getattr(pipe, name).eval().requires_grad_(False)
    return FluxPolicy(
        pipe,
        resolution,
        max_sequence_length,
        offload_text_encoders,
        encode_prompts_once,
        reference=reference,
        source_root=source_root,
    )
