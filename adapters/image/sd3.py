"""Stable Diffusion 3 / 3.5 as a FlowPolicy, through diffusers' real components.

The SD3 transformer (MMDiT) takes the noisy latents, a token sequence
``encoder_hidden_states`` [B, T, joint_attention_dim], a pooled text vector
``pooled_projections`` [B, pooled_projection_dim] and ``timestep = 1000 * sigma``, and
predicts v = eps - x0 (diffusers' flow-matching convention, the same as alignflow's).

:func:`load_sd3_policy` loads a ``StableDiffusion3Pipeline`` (local folder in diffusers
layout, or hub id when online) and uses its own pieces: ``encode_prompt`` for the two
CLIP encoders and T5 (so embeddings are the pipeline's, bit for bit), its scheduler
for the shifted schedule, its VAE as the latent codec. The prompt encoder and codec
are injected, so the same class also serves the pixel-space digits toy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignflow.adapters.common import DiffusersExport, visiting
from alignflow.adapters.image.packed import JOINT_ATTENTION_LORA_TARGETS
from alignflow.sdk.random import Generators, randn

PromptEncoder = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SD3Condition:
    """Attributes:
    embeds: [B, T, D] token embeddings; pooled: [B, P] pooled embedding;
    null_embeds, null_pooled: the same for the empty prompt (CFG's unconditional branch);
    reference: [B, C, H, W] latents of each sample's source image for an editing model
        that takes them as extra input channels (None otherwise); both CFG branches
        see it, so guidance is on the instruction."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    null_embeds: torch.Tensor
    null_pooled: torch.Tensor
    reference: torch.Tensor | None = None


class CLIPPromptEncoder:
    """A transformers ``CLIPTextModelWithProjection`` and its tokenizer: the last hidden
    state as the token sequence, ``text_embeds`` as the pooled vector."""

    def __init__(self, tokenizer: Any, model: nn.Module, max_length: int):
        self.tokenizer, self.model, self.max_length = (
            tokenizer,
            model.eval().requires_grad_(False),
            max_length,
        )

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        out = self.model(ids)
        return out.last_hidden_state, out.text_embeds


class PipelinePromptEncoder:
    """``StableDiffusion3Pipeline.encode_prompt``: CLIP-L and CLIP-G penultimate hidden
    states side by side, zero-padded to T5's width and followed by T5's tokens (zeros if
    the pipeline was loaded without T5); pooled = both CLIP projections."""

    def __init__(self, pipe: Any, max_sequence_length: int = 256, offload: bool = False):
        self.pipe, self.max_sequence_length, self.offload = pipe, max_sequence_length, offload
        self.device = torch.device("cpu")

    def encoders(self) -> list[nn.Module]:
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``offload`` the encoders live on the CPU and visit ``device`` per call."""
        device = self.device if self.offload else self.pipe.text_encoder.device
        with visiting(self.encoders(), device, self.offload):
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=list(prompts),
                prompt_2=None,
                prompt_3=None,
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length,
                device=device,
            )
        return embeds, pooled


class SD3Policy(DiffusersExport):
    modality = "image"
    default_lora_targets = JOINT_ATTENTION_LORA_TARGETS

    def __init__(
        self,
        transformer: nn.Module,
        prompt_encoder: PromptEncoder,
        codec: Any,
        scheduler: Any,
        latent_shape: Sequence[int],
        modules: Mapping[str, nn.Module] | None = None,
        pipeline: Any = None,
        encode_prompts_once: bool = False,
        sources: Any = None,
    ):
        """
        Args:
            transformer: an ``SD3Transformer2DModel``.
            prompt_encoder: prompts -> (embeds [B, T, D], pooled [B, P]).
            codec: ``encode(media) -> latents`` and ``decode(latents) -> media``.
            scheduler: a ``FlowMatchEulerDiscreteScheduler`` (its shift defines the schedule).
            latent_shape: (C, H, W) of one latent.
            modules: the other modules to move with ``to()`` (text encoders, VAE).
            pipeline: the ``StableDiffusion3Pipeline`` the parts came from, if any (for
                comparisons with diffusers' own sampling and for saving).
            encode_prompts_once: :meth:`prepare_prompts` encodes the run's prompts and
                frees the pipeline's text encoders.
            sources: for an editing model whose transformer takes the source's latents
                as extra input channels: a :class:`~alignflow.modalities.sources.SourceMedia`
                giving each prompt's source image at the model's pixel size.
        """
        self.transformer = transformer
        self.prompt_encoder, self.codec, self.scheduler = prompt_encoder, codec, scheduler
        self.latent_shape = tuple(latent_shape)
        self.patch_size = transformer.config.patch_size  # read now: the trainer may wrap the module
        self.other_modules = dict(modules or {})
        self.pipeline, self.encode_prompts_once = pipeline, encode_prompts_once
        self.sources = sources
        self._null: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare_prompts(self, prompts: Sequence[str], metadata: Any = None) -> None:
        """With ``encode_prompts_once``: every prompt of the run (and the empty one) is
        encoded now, and CLIP-L, CLIP-G and T5 are freed (the trainer calls this)."""
        if not self.encode_prompts_once or self.pipeline is None:
            return
        from alignflow.adapters.common import PromptCache, free_text_encoders

        cache = PromptCache(self.prompt_encoder, self.device)
        cache.fill([*prompts, ""])
        self.prompt_encoder, self._null = cache, None
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        free_text_encoders(self.pipeline, names, self.other_modules)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: torch.device | str) -> SD3Policy:
        self.transformer.to(device)
        for m in self.other_modules.values():
            m.to(device)
        if hasattr(self.prompt_encoder, "device"):
            self.prompt_encoder.device = torch.device(device)
        self._null = None
        return self

    def encode(
        self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> SD3Condition:
        embeds, pooled = self.prompt_encoder(prompts)
        if self._null is None:
            self._null = self.prompt_encoder([""])
        B = len(prompts)
        reference = None
        if self.sources is not None:  # each source once, reused by the prompt's group
            reference = self.to_latents(torch.stack(self.sources.batch(metadata, B)))
        return SD3Condition(
            embeds, pooled, self._null[0].expand(B, -1, -1), self._null[1].expand(B, -1), reference
        )

    def noise(self, batch_size: int, generator: Generators) -> torch.Tensor:
        return randn((batch_size, *self.latent_shape), generator, device=self.device)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The scheduler's own schedule, as ``StableDiffusion3Pipeline`` sets it (with
        resolution-dependent shift when the scheduler uses dynamic shifting)."""
        kwargs = {}
        if self.scheduler.config.get("use_dynamic_shifting", None):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
                calculate_shift,
            )

            c = self.scheduler.config
            patch = self.patch_size
            seq_len = (self.latent_shape[1] // patch) * (self.latent_shape[2] // patch)
            kwargs["mu"] = calculate_shift(
                seq_len,
                c.get("base_image_seq_len", 256),
                c.get("max_image_seq_len", 4096),
                c.get("base_shift", 0.5),
                c.get("max_shift", 1.16),
            )
        self.scheduler.set_timesteps(num_steps, **kwargs)
        return self.scheduler.sigmas.to(torch.float32).clone()

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: SD3Condition, guidance: float = 1.0
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        timestep = sigma * self.scheduler.config.num_train_timesteps
        ref = cond.reference  # an editing model's source latents: extra input channels
        x_in = x if ref is None else torch.cat([x, ref.to(x.dtype)], dim=1)
        if guidance == 1.0:
            return self._forward(x_in, timestep, cond.embeds, cond.pooled)
        v_u, v_c = self._forward(
            torch.cat([x_in, x_in]),
            torch.cat([timestep, timestep]),
            torch.cat([cond.null_embeds, cond.embeds]),
            torch.cat([cond.null_pooled, cond.pooled]),
        ).chunk(2)
        return v_u + guidance * (v_c - v_u)

    def _forward(self, x, timestep, embeds, pooled) -> torch.Tensor:
        dtype = next(self.transformer.parameters()).dtype
        return self.transformer(
            hidden_states=x.to(dtype),
            encoder_hidden_states=embeds.to(dtype),
            pooled_projections=pooled.to(dtype),
            timestep=timestep,
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.codec.decode(latents)

    def to_latents(self, media: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(media.to(self.device))

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer}

    def save_pretrained(self, folder: str | Path) -> None:
        """diffusers' folder layout (:func:`~alignflow.adapters.common.save_components`)."""
        from alignflow.adapters.common import save_components

        save_components(folder, self)


def load_sd3_policy(
    path: Any,
    resolution: int = 512,
    dtype: str = "bfloat16",
    drop_t5: bool = False,
    max_sequence_length: int = 256,
    attention: str = "auto",
    gradient_checkpointing: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload_text_encoders: bool = False,
    encode_prompts_once: bool = False,
) -> SD3Policy:
    """SD3 / SD3.5 from a local folder in diffusers layout or a hub id.

    Args:
        path: e.g. ``/models/stable-diffusion-3.5-medium`` or
            ``stabilityai/stable-diffusion-3.5-medium`` (when online), or a
            ``StableDiffusion3Pipeline`` already built (cast to ``dtype``).
        resolution: image height and width in pixels (a multiple of 8 x patch size).
        dtype: weights of every component: ``bfloat16`` (default), ``float16`` or
            ``float32``; kernels and log-probs stay float32.
        drop_t5: load without T5-XXL (its tokens become zeros, as the pipeline does):
            ~10 GB less memory, somewhat weaker prompt following.
        max_sequence_length: T5 tokens per prompt.
        attention: ``auto`` (xformers on CUDA when installed, else PyTorch SDPA),
            ``sdpa`` or ``xformers``.
        gradient_checkpointing: recompute each transformer block in the backward pass.
        vae_tiling, vae_slicing: decode in spatial tiles / one image at a time.
        offload_text_encoders: keep CLIP-L, CLIP-G and T5 on the CPU; they visit the
            accelerator only to encode (T5-XXL alone is ~9.5 GB in bf16).
        encode_prompts_once: a run encodes its data.train and data.eval prompts at the
            start and frees the text encoders (2.7 MB of CPU memory per prompt in bf16;
            prompts outside those sets are refused).
    """
    from diffusers import StableDiffusion3Pipeline

    from alignflow.adapters.common import (
        check_multiple,
        component_config,
        load_pipeline,
        memory_controls,
        pipeline_source,
        set_attention,
        vae_scale,
    )
    from alignflow.modalities.image.codec import VAECodec
    from alignflow.sdk.weights import resolve_dtype

    torch_dtype = resolve_dtype(dtype)
    # what the model cannot take is refused from its configs, before any weights load
    source = pipeline_source(path, StableDiffusion3Pipeline)
    patch = component_config(source, "transformer")["patch_size"]
    check_multiple(
        "policy.resolution", resolution, vae_scale(source) * patch, "VAE scale x patch size"
    )
    extra = {"text_encoder_3": None, "tokenizer_3": None} if drop_t5 else {}
    pipe = load_pipeline(StableDiffusion3Pipeline, source, torch_dtype, **extra)
    codec = VAECodec(pipe.vae)
    cfg = pipe.transformer.config
    set_attention(pipe.transformer, attention)
    memory_controls(pipe, gradient_checkpointing, vae_tiling, vae_slicing)
    side = resolution // codec.scale_factor
    prompt_encoder = PipelinePromptEncoder(pipe, max_sequence_length, offload_text_encoders)
    for m in (*prompt_encoder.encoders(), pipe.vae):
        m.eval().requires_grad_(False)
    modules = {"vae": pipe.vae} | (
        {}
        if offload_text_encoders
        else {n: getattr(pipe, n) for n in ("text_encoder", "text_encoder_2", "text_encoder_3")}
    )
    modules = {n: m for n, m in modules.items() if m is not None}
    return SD3Policy(
        pipe.transformer,
        prompt_encoder,
        codec,
        pipe.scheduler,
        latent_shape=(cfg.in_channels, side, side),
        modules=modules,
        pipeline=pipe,
        encode_prompts_once=encode_prompts_once,
    )
