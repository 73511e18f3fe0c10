"""Tiny SD3 policies in pixel space: the offline toy experiments' models.

Real classes at tiny size: a diffusers ``SD3Transformer2DModel`` over small grayscale
images, conditioned through a transformers ``CLIPTextModelWithProjection`` with a
word-level tokenizer built offline from the experiment's prompt vocabulary. The text
encoder keeps its seeded random initialisation (like SD3's encoders it is frozen;
the transformer learns to read it). Base weights come from
``alignflow pretrain experiment=<preset>`` and ship in ``assets/<preset>_base`` in
diffusers' folder layout (``scripts/build_toy_assets.py`` regenerates them).

Presets:
- ``digits``: 8x8 handwritten digits (scikit-learn), "a handwritten digit seven".
- ``words``: 16x40 rendered three-letter words, 'a sign that says "fox"'.
- ``digits_edit``: 8x8 digits edited into others ("change this digit into a seven"),
  the source as a second input channel (:mod:`alignflow.modalities.image.digit_edits`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from alignflow.adapters.common import component_folder
from alignflow.adapters.image.sd3 import CLIPPromptEncoder, SD3Policy
from alignflow.adapters.tokenizers import word_tokenizer
from alignflow.modalities.image.codec import PixelCodec
from alignflow.sdk.errors import ConfigError

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class Preset:
    height: int
    width: int
    patch_size: int
    max_tokens: int
    data: str  # the module with the preset's data: vocabulary(), PROMPT_FILES, ...
    edit: bool = False  # the source image enters as a second input channel

    def data_module(self) -> ModuleType:
        return importlib.import_module(self.data)


PRESETS = {
    "digits": Preset(
        height=8, width=8, patch_size=2, max_tokens=8, data="alignflow.modalities.image.digits"
    ),
    "words": Preset(
        height=16, width=40, patch_size=4, max_tokens=10, data="alignflow.modalities.image.words"
    ),
    "digits_edit": Preset(
        height=8,
        width=8,
        patch_size=2,
        max_tokens=8,
        data="alignflow.modalities.image.digit_edits",
        edit=True,
    ),
}


def build_components(preset: str, seed: int = 0, width: int = 64, layers: int = 4):
    """Fresh (transformer, text_encoder, tokenizer, scheduler) for ``preset``, seeded."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    p = PRESETS[preset]
    tokenizer = word_tokenizer(p.data_module().vocabulary(), p.max_tokens)
    torch.manual_seed(seed)
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=p.max_tokens,
        projection_dim=32,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    text_encoder = CLIPTextModelWithProjection(text_cfg)
    side = max(p.height, p.width)
    transformer = SD3Transformer2DModel(
        sample_size=side,
        patch_size=p.patch_size,
        in_channels=2 if p.edit else 1,
        out_channels=1,
        num_layers=layers,
        attention_head_dim=16,
        num_attention_heads=width // 16,
        joint_attention_dim=32,
        caption_projection_dim=width,
        pooled_projection_dim=32,
        pos_embed_max_size=side,
    )
    return transformer, text_encoder, tokenizer, FlowMatchEulerDiscreteScheduler(shift=1.0)


def make_policy(
    transformer, text_encoder, tokenizer, scheduler, preset: str, source_root: str = ""
) -> SD3Policy:
    p = PRESETS[preset]
    encoder = CLIPPromptEncoder(tokenizer, text_encoder, p.max_tokens)
    sources = None
    if p.edit:  # each prompt row carries its source (inline pixels or a path)
        from alignflow.modalities.image.io import image_sources

        sources = image_sources((p.height, p.width), source_root, mode="L")
    return SD3Policy(
        transformer,
        encoder,
        PixelCodec(),
        scheduler,
        latent_shape=(1, p.height, p.width),
        modules={"text_encoder": text_encoder},
        sources=sources,
    )


def load_pixel_policy(
    preset: str = "digits",
    path: str = "",
    random_init: bool = False,
    seed: int = 0,
    source_root: str = "",
) -> SD3Policy:
    """The ``preset``'s policy from ``path`` (default: its shipped pretrained base), or a
    fresh random one with ``random_init=True`` (the start of pretraining). An editing
    preset's prompt rows carry their sources inline or name image files, relative ones
    against ``source_root``."""
    if preset not in PRESETS:
        raise ConfigError("policy.preset", preset, f"one of {sorted(PRESETS)}")
    if source_root and not PRESETS[preset].edit:
        editing = sorted(k for k, v in PRESETS.items() if v.edit)
        raise ConfigError(
            "policy.source_root",
            source_root,
            f'"" for a preset that does not edit; editing presets: {editing}',
        )
    if random_init:
        return make_policy(*build_components(preset, seed), preset=preset, source_root=source_root)
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    folder = component_folder(path, ASSETS / f"{preset}_base", "scripts/build_toy_assets.py")
    return make_policy(
        SD3Transformer2DModel.from_pretrained(folder / "transformer"),
        CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder"),
        AutoTokenizer.from_pretrained(folder / "tokenizer"),
        FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
        preset=preset,
        source_root=source_root,
    )
