"""Qwen-Image-Edit as a FlowPolicy, through diffusers' ``QwenImageEditPipeline`` components.

What the pipeline does per edit, and where this adapter does it:

- **The instruction is read with the source image.** Qwen2.5-VL takes a chat template
  with the source image inside (``<|vision_start|><|image_pad|><|vision_end|>``, which
  its processor expands into the image's tokens); its last hidden state, without the
  template's first 64 tokens (the system prompt), is the transformer's text sequence.
  :meth:`QwenEditPolicy.encode` does this once per prompt, with the prompt's source,
  for the instruction and for the negative prompt (" " by default).
- **Packed latents with the source's tokens appended**: the transformer sees 2 x 2
  patches of the VAE latent as tokens, as FLUX's does (:mod:`~alignflow.adapters.image.packed`,
  with the schedule); the source's packed latents follow the image's,
  ``img_shapes`` tells the RoPE both grids, and only the image tokens' velocity is kept.
- **True CFG with the norm kept**: with guidance w != 1 the velocity is
  v_n + w (v_c - v_n), rescaled per token to the norm of v_c (the pipeline's
  ``true_cfg_scale``, 4.0 on the model card). Both branches run in one batched call.
- **The schedule** is FLUX's through Qwen-Image's scheduler config (an exponential
  time shift, stretched to ``shift_terminal``).

The VAE is a one-frame video VAE with per-channel latent normalisation
(:class:`~alignflow.modalities.image.codec.NormalizedVAECodec`). Sources are read at
``resolution`` x ``resolution``; the stock pipeline resizes a source to about 1024 x
1024 pixels whatever the output size, so the two agree at the model card's 1024.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignflow.adapters.common import visiting
from alignflow.adapters.image.packed import PackedLatentPolicy
from alignflow.sdk.batching import PADDED, pad_to_longest
from alignflow.sdk.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class QwenEditCondition:
    """Attributes:
    embeds, mask: [B, T, D] Qwen2.5-VL hidden states of each instruction read with its
        source, and their mask [B, T] (1 = a token; T is the batch's longest);
    null_embeds, null_mask: the same for the negative prompt (None without one);
    reference: [B, T_img, 4C] packed latents of each sample's source image."""

    embeds: torch.Tensor = field(metadata=PADDED)
    mask: torch.Tensor = field(metadata=PADDED)
    reference: torch.Tensor
    null_embeds: torch.Tensor | None = field(default=None, metadata=PADDED)
    null_mask: torch.Tensor | None = field(default=None, metadata=PADDED)


class QwenEditPolicy(PackedLatentPolicy):
    def __init__(
        self,
        pipe: Any,
        resolution: int,
        source_root: str = "",
        negative_prompt: str | None = " ",
        offload_text_encoder: bool = False,
        encode_prompts_once: bool = False,
    ):
        from alignflow.modalities.image.codec import NormalizedVAECodec
        from alignflow.modalities.image.io import image_sources

        self.pipeline, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler
        self.codec = NormalizedVAECodec(pipe.vae)
        scale = self.codec.scale_factor
        if resolution % (2 * scale):
            raise ConfigError("policy.resolution", resolution, f"a multiple of {2 * scale}")
        self.resolution, self.latent_hw = resolution, (resolution // scale, resolution // scale)
        self.channels = pipe.transformer.config.in_channels // 4
        self.negative_prompt, self.offload_text_encoder = negative_prompt, offload_text_encoder
        self.encode_prompts_once = encode_prompts_once
        # with encode_prompts_once: (prompt, source pixels) -> its rows, unpadded, on the CPU
        self.read_once: dict[tuple[str, str], tuple[torch.Tensor, ...]] | None = None
        self.sources = image_sources((resolution, resolution), source_root)
        h, w = (s // 2 for s in self.latent_hw)
        self.img_shapes = [(1, h, w), (1, h, w)]  # the image's token grid, then the source's
        self.other_modules = {"vae": pipe.vae} | (
            {} if offload_text_encoder else {"text_encoder": pipe.text_encoder}
        )

    # ------------------------------------------------------------------ condition

    def encode(
        self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> QwenEditCondition:
        sources = torch.stack(self.sources.batch(metadata, len(prompts)))
        if self.read_once is not None:
            texts = self._cached(list(prompts), sources)
        else:
            texts = self._read(list(prompts), sources)
            if self.negative_prompt is not None:
                texts += self._read([self.negative_prompt] * len(prompts), sources)
        return QwenEditCondition(*texts[:2], self.to_latents(sources), *texts[2:])

    def prepare_prompts(self, prompts: Sequence[str], metadata: Any = None) -> None:
        """With ``encode_prompts_once``: every (prompt, source) row of the run is read now
        (Qwen2.5-VL's output depends on both), kept on the CPU without padding (~2.6 MB
        per row at 512 px in bf16, the negative prompt's as much again), and
        Qwen2.5-VL is freed (the trainer calls this)."""
        if not self.encode_prompts_once:
            return
        from alignflow.adapters.common import free_text_encoders

        rows: dict[tuple[str, str], tuple[str, Any]] = {}
        for prompt, meta in zip(prompts, metadata):
            rows.setdefault(_row_key(prompt, self.sources(meta)), (prompt, meta))
        todo, read_once = list(rows.items()), {}
        for i in range(0, len(todo), 8):
            chunk = todo[i : i + 8]
            cond = self.encode([p for _, (p, _) in chunk], [m for _, (_, m) in chunk])
            pairs = [(cond.embeds, cond.mask)]
            if cond.null_embeds is not None:
                pairs.append((cond.null_embeds, cond.null_mask))
            for j, (key, _) in enumerate(chunk):
                # each sequence without its batch padding (its mask's ones come first)
                read_once[key] = tuple(
                    t[j, : int(mask[j].sum())].cpu()
                    for embeds, mask in pairs
                    for t in (embeds, mask)
                )
        self.read_once = read_once
        log.info("read %d (prompt, source) rows once; Qwen2.5-VL is freed", len(read_once))
        free_text_encoders(self.pipeline, ["text_encoder"], self.other_modules)

    def _cached(self, prompts: list[str], sources: torch.Tensor) -> list[torch.Tensor | None]:
        """The rows :meth:`prepare_prompts` kept, each field padded to the batch's longest."""
        keys = [_row_key(p, s) for p, s in zip(prompts, sources)]
        missing = [p for p, k in zip(prompts, keys) if k not in self.read_once]
        if missing:
            raise ConfigError(
                "policy.encode_prompts_once",
                True,
                "false to edit (prompt, source) pairs that are not rows of data.train / data.eval",
                hint=f"{missing[0]!r} with its source was not read at the start, and "
                "Qwen2.5-VL is freed",
            )
        rows = [self.read_once[k] for k in keys]
        fields = [
            torch.cat(pad_to_longest([r[f][None] for r in rows])) for f in range(len(rows[0]))
        ]
        return [t.to(self.device) for t in fields] + [None] * (4 - len(fields))

    @torch.no_grad()
    def _read(self, prompts: list[str], sources: torch.Tensor) -> list[torch.Tensor]:
        """Qwen2.5-VL's reading of each prompt with its source: ``_get_qwen_prompt_embeds``
        of the pipeline, on the sources as the 8-bit images the pipeline's processor gets;
        [B, T, D] and the mask [B, T] (T: the longest after the template's first tokens)."""
        from PIL import Image

        pipe = self.pipeline
        pixels = (sources.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images = [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]
        device = self.device if self.offload_text_encoder else pipe.text_encoder.device
        with visiting([pipe.text_encoder], self.device, self.offload_text_encoder):
            embeds, mask = pipe._get_qwen_prompt_embeds(prompts, images, device)
        return [embeds.to(self.device), mask.to(self.device)]

    # ------------------------------------------------------------------ sampling

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: QwenEditCondition, guidance: float = 1.0
    ) -> torch.Tensor:
        B, dtype = x.shape[0], next(self.transformer.parameters()).dtype
        timestep = self.timestep(sigma, B, x.device)
        hidden = torch.cat([x.to(dtype), cond.reference.to(dtype)], dim=1)
        embeds, mask = cond.embeds, cond.mask
        cfg = guidance != 1.0
        if cfg:
            if cond.null_embeds is None:
                raise ConfigError(
                    "sample.guidance", guidance, "1.0 for a policy without a negative prompt"
                )
            n = 2 * B
            embeds = torch.cat(pad_to_longest([cond.null_embeds, embeds]))
            mask = torch.cat(pad_to_longest([cond.null_mask, mask]))
            hidden, timestep = hidden.repeat(2, 1, 1), timestep.repeat(2)
        else:
            n = B
        v = self.transformer(
            hidden_states=hidden,
            timestep=timestep,
            guidance=None,
            encoder_hidden_states_mask=mask,
            encoder_hidden_states=embeds.to(dtype),
            img_shapes=[self.img_shapes] * n,
            return_dict=False,
        )[0][:, : x.shape[1]]
        if not cfg:
            return v
        v_null, v_cond = v.chunk(2)
        combined = v_null + guidance * (v_cond - v_null)
        # the pipeline keeps each token's velocity norm that of the conditional branch
        return combined * (v_cond.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True))


def _row_key(prompt: str, source: torch.Tensor) -> tuple[str, str]:
    """A prompt row's identity for the encode-once cache: the prompt and its source's
    pixels (so paths, inline arrays and PIL images of one image agree)."""
    import hashlib

    pixels = (source.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return prompt, hashlib.sha1(pixels.tobytes()).hexdigest()


def load_qwen_edit_policy(
    path: Any,
    resolution: int = 1024,
    source_root: str = "",
    negative_prompt: str | None = " ",
    dtype: str = "bfloat16",
    attention: str = "auto",
    gradient_checkpointing: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload_text_encoder: bool = False,
    encode_prompts_once: bool = False,
) -> QwenEditPolicy:
    """Qwen-Image-Edit from a local folder in diffusers layout, a hub id
    (``Qwen/Qwen-Image-Edit`` when online) or a ``QwenImageEditPipeline`` already built.

    Each prompt row names its source image in the ``source`` column (relative paths
    against ``source_root``); sources are resized to ``resolution`` x ``resolution``,
    which the edit keeps. ``sample.guidance`` is the pipeline's ``true_cfg_scale``
    against ``negative_prompt`` (None: no negative branch, guidance must be 1).
    ``offload_text_encoder`` keeps Qwen2.5-VL-7B (~16 GB in bf16) on the CPU between
    encodes; ``encode_prompts_once`` reads every (prompt, source) row of data.train and
    data.eval at the start and frees it (other rows are refused); the other switches
    are :func:`~alignflow.adapters.image.flux.load_flux_policy`'s."""
    from diffusers import QwenImageEditPipeline

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
    source = pipeline_source(path, QwenImageEditPipeline)
    check_multiple(
        "policy.resolution",
        resolution,
        2 * vae_scale(source),
        "2 x the VAE scale: latents pack 2 x 2",
    )
    pipe = load_pipeline(QwenImageEditPipeline, source, torch_dtype)
    set_attention(pipe.transformer, attention)
    memory_controls(pipe, gradient_checkpointing, vae_tiling, vae_slicing)
    for name in ("text_encoder", "vae"):
        getattr(pipe, name).eval().requires_grad_(False)
    return QwenEditPolicy(
        pipe, resolution, source_root, negative_prompt, offload_text_encoder, encode_prompts_once
    )
