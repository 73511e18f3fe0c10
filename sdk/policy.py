"""The contract between the trainer and a model: :class:`FlowPolicy`.

An adapter wraps one model family (SD3, FLUX, Wan, an F5-style TTS DiT) and offers
verbs, not model parts: the trainer never touches a VAE, a text encoder or a vocoder.
Conventions every adapter follows (converting at its boundary if its model differs):

- time is sigma in [0, 1], sigma = 1 pure noise, sigma = 0 data;
  x_sigma = (1 - sigma) x0 + sigma eps and the velocity is v = eps - x0;
- tensors have the batch first; a "sample" is all the other dims, so [B, C, H, W]
  images, [B, C, F, H, W] videos and [B, T, D] mel frames all work;
- randomness comes only from the generators passed in.

A policy that starts from source media (an editing model's source image, a TTS
model's reference audio) reads it in ``encode`` from each prompt's metadata row and
keeps it in the condition (encoded once per prompt; the trainer repeats a prompt's
condition for its group). An editing policy exposes its reader as ``sources`` (a
``SourceMedia`` of modalities/sources.py), so that reports can show each
prompt's source beside its edits.

LoRA, the frozen reference, EMA, precision, checkpoints and distribution are the
SDK's business (:mod:`alignflow.sdk.finetune`, :mod:`alignflow.sdk.trainer`): an
adapter only says which of its modules hold the denoiser, through
``trainable_modules()``. The trainer may replace those attributes with wrapped
versions (peft LoRA layers inside, accelerate/DDP outside), so ``velocity`` must reach
the denoiser through the attribute each call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from alignflow.sdk.random import Generators


@runtime_checkable
class FlowPolicy(Protocol):
    modality: str
    """Which media ``decode`` returns: "image", "video" or "speech". Rewards declare the
    modality they accept and the config check compares the two."""

    default_lora_targets: Sequence[str]
    """Names (peft ``target_modules``) of the layers LoRA adapts by default."""

    def encode(
        self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> Any:
        """Encode B prompts (and per-sample conditions in ``metadata``) once.

        Returns an opaque condition: a dataclass or dict whose tensors have the batch
        first (so :func:`alignflow.sdk.batching.select` can index it), including the
        unconditional branch when classifier-free guidance needs it.
        """

    def noise(self, batch_size: int, generator: Generators) -> torch.Tensor:
        """Initial latents x_1 ~ N(0, I): [B, ...]. ``generator`` may be a list with one
        generator per sample, so that a sample's noise does not depend on its batch."""

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The model's own sampling schedule for ``num_steps`` steps: float32 [N+1],
        from sigmas[0] = 1 down to sigmas[N] = 0."""

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Any, guidance: float = 1.0
    ) -> torch.Tensor:
        """v(x, sigma | cond): [B, ...] for x [B, ...] and sigma [B] (or a scalar).

        With ``guidance`` != 1, classifier-free guidance v_u + w (v_c - v_u) computed
        with one batched call of the denoiser."""

    def decode(self, latents: torch.Tensor, cond: Any = None) -> Any:
        """Latents at sigma = 0 -> the modality's media (images [B, C, H, W] in [0, 1]).

        ``cond`` is the condition of each of the B samples (already repeated per group
        member); infilling policies need it to cut out what they generated (speech: the
        span after the reference audio). Media batches support ``len``, ``[b]`` (one
        item) and ``.cpu()``."""

    def to_latents(self, media: Any) -> torch.Tensor:
        """Media -> latents at sigma = 0 (the inverse of ``decode``): used by
        pretraining and forward-process losses."""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The denoiser module(s) RL trains, by attribute name on this policy."""

    def to(self, device: torch.device | str) -> FlowPolicy:
        """Move every module to ``device``; returns self."""
