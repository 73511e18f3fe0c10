"""Wan 2.1 text-to-video as a FlowPolicy, through diffusers' real components.

``WanTransformer3DModel`` takes latents [B, C, F, H, W], UMT5 token states
``encoder_hidden_states`` [B, T, 4096] and ``timestep = 1000 * sigma``, and predicts
v = eps - x0 (the same convention as alignflow's). :func:`load_wan_policy` loads a
``WanPipeline`` (local folder in diffusers layout, or hub id when online) and uses its
pieces: ``encode_prompt`` (UMT5, tokens cut at the prompt's length and zero-padded, bit
for bit the pipeline's), its scheduler's sigmas (Wan's shifted schedule; the
pipeline's UniPC solver is replaced by the SDK's Euler / SDE kernels on the same
sigmas), and ``AutoencoderKLWan`` as the latent codec.

Classifier-free guidance runs the conditional and negative prompts as one batched
call (the pipeline runs two). Memory controls for 1.3B / 14B: gradient checkpointing
of the transformer blocks, VAE tiling and slicing, and ``offload_text_encoder`` (UMT5
XXL, ~11 GB in bf16, stays on the CPU and moves to the accelerator only to encode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignflow.adapters.common import DiffusersExport, visiting
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import Generators, randn

# Self- and cross-attention projections of every block (Flow-GRPO's Wan LoRA targets).
WAN_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class WanCondition:
    """Attributes: embeds [B, T, D] prompt tokens; null_embeds [B, T, D] the negative
    prompt's (CFG's other branch)."""

    embeds: torch.Tensor
    null_embeds: torch.Tensor


class PipelinePromptEncoder:
    """``WanPipeline.encode_prompt`` without CFG, so prompt and negative prompt encode
    through the same path. With ``offload`` the text encoder lives on the CPU and
    visits ``device`` for each call."""

    def __init__(self, pipe: Any, max_sequence_length: int = 512, offload: bool = False):
        self.pipe, self.max_sequence_length, self.offload = pipe, max_sequence_length, offload
        self.device = torch.device("cpu")

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        with visiting([self.pipe.text_encoder], self.device, self.offload):
            embeds, _ = self.pipe.encode_prompt(
                prompt=list(prompts),
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length,
                device=self.device,
            )
        return embeds


def positions(size: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, 3, F, H, W]: each cell's frame, row and column, scaled to [-1, 1]."""
    axes = [torch.linspace(-1, 1, n, device=device, dtype=dtype) for n in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


class WanPolicy(DiffusersExport):
    modality = "video"
    default_lora_targets = WAN_LORA_TARGETS

    def __init__(
        self,
        transformer: nn.Module,
        prompt_encoder: Any,
        codec: Any,
        scheduler: Any,
        latent_shape: Sequence[int],
        negative_prompt: str = "",
        modules: Mapping[str, nn.Module] | None = None,
        pipeline: Any = None,
        position_channels: bool = False,
        encode_prompts_once: bool = False,
    ):
        """
        Args:
            transformer: a ``WanTransformer3DModel``.
            prompt_encoder: prompts -> token states [B, T, D].
            codec: ``encode(Video) -> latents`` and ``decode(latents) -> Video``.
            scheduler: the pipeline's scheduler; only its sigmas are used.
            latent_shape: (C, F, H, W) of one latent.
            negative_prompt: CFG's unconditional branch ("" as the pipeline defaults to;
                Wan's authors use a long negative prompt).
            modules: the other modules to move with ``to()`` (VAE, and the text encoder
                unless it is offloaded).
            pipeline: the ``WanPipeline`` the parts came from, if any.
            position_channels: concatenate three constant channels to the latents
                before the transformer: the frame, row and column of each cell, each
                ``linspace(-1, 1)`` (CoordConv; the transformer then has
                ``in_channels = C + 3``). Wan's RoPE is relative only, so without them a
                small Wan cannot tie a layout to absolute positions; the offline default
                uses them, Wan 2.1 checkpoints do not.
            encode_prompts_once: :meth:`prepare_prompts` encodes the run's prompts and
                frees the pipeline's text encoder.
        """
        want = latent_shape[0] + 3 * position_channels
        if transformer.config.in_channels != want:
            raise ConfigError(
                "policy.transformer.in_channels",
                transformer.config.in_channels,
                f"{want} (the {latent_shape[0]} latent channels"
                + (" + 3 position channels)" if position_channels else ")"),
            )
        self.transformer = transformer
        self.prompt_encoder, self.codec, self.scheduler = prompt_encoder, codec, scheduler
        self.latent_shape = tuple(latent_shape)
        self.negative_prompt = negative_prompt
        self.other_modules = dict(modules or {})
        self.pipeline = pipeline
        self.position_channels = position_channels
        self.encode_prompts_once = encode_prompts_once
        self._null: torch.Tensor | None = None

    def prepare_prompts(self, prompts: Sequence[str], metadata: Any = None) -> None:
        """With ``encode_prompts_once``: every prompt of the run and the negative prompt
        are encoded now, and UMT5 is freed (the trainer calls this)."""
        if not self.encode_prompts_once or self.pipeline is None:
            return
        from alignflow.adapters.common import PromptCache, free_text_encoders

        cache = PromptCache(self.prompt_encoder, self.device)
        cache.fill([*prompts, self.negative_prompt])
        self.prompt_encoder, self._null = cache, None
        free_text_encoders(self.pipeline, ("text_encoder",), self.other_modules)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: torch.device | str) -> WanPolicy:
        self.transformer.to(device)
        for m in self.other_modules.values():
            m.to(device)
        if hasattr(self.prompt_encoder, "device"):
            self.prompt_encoder.device = torch.device(device)
        self._null = None
        return self

    def encode(
        self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> WanCondition:
        embeds = self.prompt_encoder(prompts)
        if self._null is None:
            self._null = self.prompt_encoder([self.negative_prompt])
        return WanCondition(embeds, self._null.expand(len(prompts), -1, -1))

    def noise(self, batch_size: int, generator: Generators) -> torch.Tensor:
        return randn((batch_size, *self.latent_shape), generator, device=self.device)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The scheduler's own (shifted) schedule, as ``WanPipeline`` sets it."""
        self.scheduler.set_timesteps(num_steps)
        return self.scheduler.sigmas.to(torch.float32).clone()

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: WanCondition, guidance: float = 1.0
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        timestep = sigma * self.scheduler.config.num_train_timesteps
        if guidance == 1.0:
            return self._forward(x, timestep, cond.embeds)
        v_u, v_c = self._forward(
            torch.cat([x, x]),
            torch.cat([timestep, timestep]),
            torch.cat([cond.null_embeds, cond.embeds]),
        ).chunk(2)
        return v_u + guidance * (v_c - v_u)

    def _forward(
        self, x: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        dtype = next(self.transformer.parameters()).dtype
        if self.position_channels:
            x = torch.cat(
                [x, positions(x.shape[2:], x.device, x.dtype).expand(x.shape[0], -1, -1, -1, -1)], 1
            )
        return self.transformer(
            hidden_states=x.to(dtype),
            timestep=timestep,
            encoder_hidden_states=embeds.to(dtype),
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, cond: Any = None) -> Any:
        return self.codec.decode(latents)

    def to_latents(self, media: Any) -> torch.Tensor:
        return self.codec.encode(media).to(self.device)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer}

    def save_pretrained(self, folder: str | Path) -> None:
        """diffusers' folder layout (:func:`~alignflow.adapters.common.save_components`)."""
        from alignflow.adapters.common import save_components

        save_components(folder, self)


def load_wan_policy(
    path: Any,
    height: int = 480,
    width: int = 832,
    num_frames: int = 33,
    fps: float = 16.0,
    dtype: str = "bfloat16",
    vae_dtype: str = "float32",
    negative_prompt: str = "",
    max_sequence_length: int = 512,
    gradient_checkpointing: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload_text_encoder: bool = False,
    attention: str = "sdpa",
    encode_prompts_once: bool = False,
) -> WanPolicy:
    """Wan 2.1 T2V (1.3B or 14B) from a local folder in diffusers layout or a hub id.

    Args:
        path: e.g. ``/models/Wan2.1-T2V-1.3B-Diffusers`` or
            ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (when online), or a ``WanPipeline``
            already built (cast to ``dtype``, its VAE to ``vae_dtype``).
        height, width: pixels, multiples of 16 (VAE 8 x patch 2).
        num_frames: 1 + 4k (the VAE's temporal stride); 81 is Wan's 5 s at 16 fps.
        dtype: transformer and text encoder (``bfloat16`` default); kernels and
            log-probs stay float32. ``vae_dtype``: the VAE's (float32 as Wan's authors run it).
        negative_prompt: CFG's other branch.
        gradient_checkpointing: recompute each block in the backward pass (the
            training step's activation memory drops from O(layers) to O(1) blocks).
        vae_tiling, vae_slicing: decode in spatial tiles / one clip at a time.
        offload_text_encoder: keep UMT5 on the CPU between encodes.
        encode_prompts_once: a run encodes its data.train and data.eval prompts at the
            start and frees UMT5 (4.2 MB of CPU memory per prompt in bf16; prompts
            outside those sets are refused).
        attention: ``sdpa`` (PyTorch's) or a diffusers attention backend
            (``flash``, ``xformers``, ``sage``... where installed).
    """
    from diffusers import AutoencoderKLWan, WanPipeline

    from alignflow.adapters.common import (
        check_multiple,
        component_config,
        load_pipeline,
        pipeline_source,
    )
    from alignflow.modalities.video.codec import WanVAECodec
    from alignflow.sdk.weights import resolve_dtype

    torch_dtype = resolve_dtype(dtype)
    source = pipeline_source(path, WanPipeline)
    # what the model cannot take is refused from its configs, before any weights load
    vae_cfg = component_config(source, "vae")
    ps = (
        vae_cfg.get("scale_factor_spatial", 8)
        * component_config(source, "transformer")["patch_size"][1]
    )
    pt = vae_cfg.get("scale_factor_temporal", 4)
    check_multiple("policy.height", height, ps, "VAE scale x patch size")
    check_multiple("policy.width", width, ps, "VAE scale x patch size")
    if num_frames < 1 or (num_frames - 1) % pt:
        raise ConfigError(
            "policy.num_frames", num_frames, f"1 + {pt} k (the VAE's temporal stride)"
        )
    vae_torch_dtype = resolve_dtype(vae_dtype)
    vae = (
        AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=vae_torch_dtype)
        if isinstance(source, str)
        else source.vae.to(vae_torch_dtype)
    )
    pipe = load_pipeline(WanPipeline, source, torch_dtype, vae=vae)
    codec = WanVAECodec(pipe.vae, fps=fps, tiling=vae_tiling, slicing=vae_slicing)
    cfg = pipe.transformer.config
    if attention != "sdpa":
        from diffusers.models.attention_dispatch import AttentionBackendName

        names = [b.value for b in AttentionBackendName]
        if attention not in names:
            raise ConfigError(
                "policy.attention", attention, f"'sdpa' or a diffusers attention backend of {names}"
            )
        pipe.transformer.set_attention_backend(attention)
    if gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    modules = {"vae": pipe.vae} | (
        {} if offload_text_encoder else {"text_encoder": pipe.text_encoder}
    )
    for m in (pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    latent_shape = (
        cfg.in_channels,
        (num_frames - 1) // pt + 1,
        height // codec.scale_factor_spatial,
        width // codec.scale_factor_spatial,
    )
    return WanPolicy(
        pipe.transformer,
        PipelinePromptEncoder(pipe, max_sequence_length, offload_text_encoder),
        codec,
        pipe.scheduler,
        latent_shape,
        negative_prompt=negative_prompt,
        modules=modules,
        pipeline=pipe,
        encode_prompts_once=encode_prompts_once,
    )
