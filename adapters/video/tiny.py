"""Real diffusers Wan 2.1 pieces at tiny size, built offline from config.

- :func:`tiny_wan_pipeline`: a ``WanPipeline`` (``WanTransformer3DModel``,
  ``AutoencoderKLWan``, ``UMT5EncoderModel``, a T5 tokenizer built from letters) for
  tests and benchmarks: saved with ``save_pretrained`` and loaded back through
  :func:`~alignflow.adapters.video.wan.load_wan_policy`, the product path.
- :func:`load_shapes_wan`: the offline video default's policy (``experiment=video_shapes``):
  a 4-layer, 128-wide ``WanTransformer3DModel`` (1.2M parameters, 4 x 4 patches) over 8
  RGB frames of 16 x 16 pixels (pixel space, Wan's [B, C, F, H, W] layout) plus three
  position channels (``in_channels = 3 + 3``, see ``WanPolicy``), conditioned through a
  tiny ``UMT5EncoderModel`` with a word-level tokenizer of the task's vocabulary. The
  text encoder keeps its seeded random weights (frozen, like Wan's UMT5; the transformer
  learns to read it). The base is pretrained by ``alignflow pretrain
  experiment=video_shapes`` in a four-stage curriculum and ships in
  ``assets/shapes_base`` (``scripts/build_video_assets.py`` regenerates it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alignflow.adapters.common import component_folder
from alignflow.adapters.video.wan import WanPolicy
from alignflow.modalities.video import shapes
from alignflow.modalities.video.codec import PixelVideoCodec

ASSETS = Path(__file__).parent / "assets"
MAX_TOKENS = 8


def _umt5(vocab: int, d_model: int, seed: int, pad: int = 0, eos: int = 1):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab,
            d_model=d_model,
            d_kv=8,
            d_ff=2 * d_model,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=pad,
            eos_token_id=eos,
            decoder_start_token_id=pad,
        )
    )


def tiny_wan_pipeline(seed: int = 0, shift: float = 3.0):
    """A ``WanPipeline``: 2-layer transformer over 16 latent channels, a 3-stage causal
    VAE (4x in time, 8x in space), a 1-layer UMT5 and a letter T5 tokenizer."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    from alignflow.adapters.tokenizers import t5_tokenizer

    tok = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    return WanPipeline(
        tokenizer=tok,
        text_encoder=_umt5(len(tok), 32, seed + 2),
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
    )


class UMT5PromptEncoder:
    """Tokens -> UMT5 last hidden states, cut at each prompt's length and zero-padded
    (what ``WanPipeline._get_t5_prompt_embeds`` does)."""

    def __init__(self, tokenizer, model, max_length: int):
        self.tokenizer, self.model, self.max_length = (
            tokenizer,
            model.eval().requires_grad_(False),
            max_length,
        )

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        t = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = t.attention_mask.to(device)
        return self.model(t.input_ids.to(device), mask).last_hidden_state * mask[..., None]


def build_components(seed: int = 0, width: int = 128, layers: int = 4):
    """Fresh (transformer, text_encoder, tokenizer, scheduler) of the shapes policy, seeded."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    from alignflow.adapters.tokenizers import word_tokenizer

    tokenizer = word_tokenizer(shapes.vocabulary(), MAX_TOKENS)
    text_encoder = _umt5(
        len(tokenizer), 32, seed + 1, tokenizer.pad_token_id, tokenizer.eos_token_id
    )
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 4, 4),
        num_attention_heads=width // 32,
        attention_head_dim=32,
        in_channels=3 + 3,
        out_channels=3,
        text_dim=32,
        freq_dim=64,
        ffn_dim=4 * width,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    return transformer, text_encoder, tokenizer, FlowMatchEulerDiscreteScheduler(shift=1.0)


def make_policy(transformer, text_encoder, tokenizer, scheduler) -> WanPolicy:
    return WanPolicy(
        transformer,
        UMT5PromptEncoder(tokenizer, text_encoder, MAX_TOKENS),
        PixelVideoCodec(shapes.FPS),
        scheduler,
        latent_shape=(3, shapes.FRAMES, shapes.SIZE, shapes.SIZE),
        modules={"text_encoder": text_encoder},
        position_channels=True,
    )


def load_shapes_wan(path: str = "", random_init: bool = False, seed: int = 0) -> WanPolicy:
    """The shapes policy from ``path`` (default: the shipped pretrained base), or a
    fresh random one with ``random_init=True`` (the start of pretraining)."""
    if random_init:
        return make_policy(*build_components(seed))
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = component_folder(path, ASSETS / "shapes_base", "scripts/build_video_assets.py")
    return make_policy(
        WanTransformer3DModel.from_pretrained(folder / "transformer"),
        UMT5EncoderModel.from_pretrained(folder / "text_encoder"),
        AutoTokenizer.from_pretrained(folder / "tokenizer"),
        FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
    )
