"""The tiny SD3 policy of the offline ``image_digits`` experiment.

Real classes at tiny size: a diffusers ``SD3Transformer2DModel`` in pixel space over
8x8 grayscale digits, conditioned through a transformers ``CLIPTextModelWithProjection``
with a word-level tokenizer built offline from the prompt vocabulary. The text
encoder keeps its seeded random initialisation (like SD3's encoders, it is frozen;
the transformer learns to read it); the transformer's base weights come from
``alignflow pretrain experiment=image_digits`` and ship in ``assets/digits_base`` in
diffusers' folder layout (``scripts/build_digits_assets.py`` regenerates them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignflow.adapters.image.sd3 import CLIPPromptEncoder, SD3Policy
from alignflow.modalities.image.codec import PixelCodec
from alignflow.modalities.image.digits import EVAL_TEMPLATES, TRAIN_TEMPLATES, WORDS
from alignflow.sdk.errors import ConfigError

DEFAULT_DIR = Path(__file__).parent / "assets" / "digits_base"
MAX_TOKENS = 8
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def build_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` over the digits prompts' words, built
    offline (no vocabulary download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in TRAIN_TEMPLATES + EVAL_TEMPLATES for w in t.format("").split()} | set(WORDS))
    vocab = {w: i for i, w in enumerate(SPECIALS + tuple(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=MAX_TOKENS)


def build_digits_components(seed: int = 0, width: int = 64, layers: int = 4, patch_size: int = 2):
    """Fresh (transformer, text_encoder, tokenizer, scheduler) at tiny size, seeded."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS, projection_dim=32, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    text_encoder = CLIPTextModelWithProjection(text_cfg)
    heads = width // 16
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=patch_size, in_channels=1, out_channels=1, num_layers=layers, attention_head_dim=16,
        num_attention_heads=heads, joint_attention_dim=32, caption_projection_dim=width, pooled_projection_dim=32,
        pos_embed_max_size=8,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    return transformer, text_encoder, tokenizer, scheduler


def make_policy(transformer, text_encoder, tokenizer, scheduler) -> SD3Policy:
    encoder = CLIPPromptEncoder(tokenizer, text_encoder, MAX_TOKENS)
    return SD3Policy(transformer, encoder, PixelCodec(), scheduler, latent_shape=(1, 8, 8),
                     modules={"text_encoder": text_encoder})


def load_digits_policy(path: str = "", random_init: bool = False, seed: int = 0) -> SD3Policy:
    """The digits policy from ``path`` (default: the shipped pretrained base), or a
    fresh random one with ``random_init=True`` (the start of pretraining)."""
    if random_init:
        return make_policy(*build_digits_components(seed))
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    folder = Path(path) if path else DEFAULT_DIR
    missing = [d for d in ("transformer", "text_encoder", "tokenizer", "scheduler") if not (folder / d).is_dir()]
    if missing:
        raise ConfigError("policy.path", str(folder), "a folder with transformer/, text_encoder/, tokenizer/ and "
                          f"scheduler/ (missing {missing}); run scripts/build_digits_assets.py to regenerate it")
    return make_policy(
        SD3Transformer2DModel.from_pretrained(folder / "transformer"),
        CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder"),
        AutoTokenizer.from_pretrained(folder / "tokenizer"),
        FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
    )
