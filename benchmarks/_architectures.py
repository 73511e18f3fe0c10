"""The product models' full-size architectures from their published configs, with
random weights (nothing is downloaded), and the tiny test pipelines that stand in for
them in ``realscale.py --smoke``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def denoiser(name: str) -> torch.nn.Module:
    """The full-size denoiser from its published config (on the current default device)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, WanTransformer3DModel

    from alignflow.adapters.speech.dit import DiT, DiTConfig

    if name == "sd35_medium":  # stabilityai/stable-diffusion-3.5-medium transformer/config.json
        return SD3Transformer2DModel(
            sample_size=128,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=24,
            attention_head_dim=64,
            num_attention_heads=24,
            joint_attention_dim=4096,
            caption_projection_dim=1536,
            pooled_projection_dim=2048,
            pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)),
            qk_norm="rms_norm",
        )
    if name == "flux1_dev":  # black-forest-labs/FLUX.1-dev transformer/config.json
        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            out_channels=64,
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )
    if name == "wan21_1_3b":  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        )
    return DiT(DiTConfig(text_num_embeds=F5_VOCAB))  # F5TTS_v1_Base: DiTConfig's defaults


F5_VOCAB = 2545  # F5-TTS's Emilia zh-en vocab.txt


def checkpoint_size(name: str) -> float:
    """Tensors of the denoiser's checkpoint (parameters + saved buffers), billions,
    counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = denoiser(name)
    return sum(t.numel() for t in model.state_dict().values()) / 1e9


def _clip(hidden: int, layers: int, heads: int, act: str, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        projection_dim=hidden,
        hidden_act=act,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5_xxl(umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    cfg = dict(
        d_model=4096,
        d_ff=10240,
        d_kv=64,
        num_heads=64,
        num_layers=24,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        pad_token_id=0,
        eos_token_id=1,
    )
    if umt5:  # Wan's UMT5-XXL encoder
        return UMT5EncoderModel(UMT5Config(vocab_size=256384, **cfg))
    return T5EncoderModel(T5Config(vocab_size=32128, **cfg))


def _sd3_vae(scaling: float, shift: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def full_pipeline(name: str, device: torch.device) -> Any:
    """The stock diffusers pipeline at full size with random weights: every module is
    initialised on ``device`` in float32 and cast to bf16 before the next one is made.
    The tokenizers are the offline character ones (the encoders' sizes are real)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        StableDiffusion3Pipeline,
        WanPipeline,
    )

    from alignflow.adapters.common import cast
    from alignflow.adapters.tokenizers import clip_tokenizer, t5_tokenizer

    def make(fn: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        torch.manual_seed(len(built))
        with torch.device(device):
            module = fn()
        built.append(cast(module, torch.bfloat16).eval())
        return built[-1]

    built: list[torch.nn.Module] = []
    if name == "sd35_medium":
        return StableDiffusion3Pipeline(
            transformer=make(lambda: denoiser(name)),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=make(lambda: _sd3_vae(1.5305, 0.0609)),
            text_encoder=make(lambda: _clip(768, 12, 12, "quick_gelu", True)),
            tokenizer=clip_tokenizer(77),
            text_encoder_2=make(lambda: _clip(1280, 32, 20, "gelu", True)),
            tokenizer_2=clip_tokenizer(77),
            text_encoder_3=make(_t5_xxl),
            tokenizer_3=t5_tokenizer(),
        )
    if name == "flux1_dev":
        return FluxPipeline(
            transformer=make(lambda: denoiser(name)),
            scheduler=FlowMatchEulerDiscreteScheduler(
                shift=3.0,
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            vae=make(lambda: _sd3_vae(0.3611, 0.1159)),
            text_encoder=make(lambda: _clip(768, 12, 12, "quick_gelu", False)),
            tokenizer=clip_tokenizer(77),
            text_encoder_2=make(_t5_xxl),
            tokenizer_2=t5_tokenizer(),
        )
    return WanPipeline(
        transformer=make(lambda: denoiser(name)),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=make(AutoencoderKLWan),
        text_encoder=make(lambda: _t5_xxl(umt5=True)),
        tokenizer=t5_tokenizer(),
    )


def tiny_pipeline(name: str) -> Any:
    from alignflow.adapters.image.tiny import tiny_flux_pipeline, tiny_sd3_pipeline
    from alignflow.adapters.video.tiny import tiny_wan_pipeline

    return {"sd35_medium": tiny_sd3_pipeline, "flux1_dev": tiny_flux_pipeline}.get(
        name, tiny_wan_pipeline
    )()


def f5_folder(folder: Path, smoke: bool) -> Path:
    """A random F5-TTS v1 Base checkpoint in the release layout (model_*.safetensors as
    ``ema_model.transformer.*``, vocab.txt), which ``load_f5_policy`` reads as it reads
    the released one. ``smoke``: a 2-layer model of width 64."""
    from safetensors.torch import save_file

    from alignflow.adapters.speech.dit import DiT, DiTConfig

    chars = [chr(c) for c in range(32, 127)] + [chr(0x4E00 + i) for i in range(F5_VOCAB)]
    vocab = chars[:F5_VOCAB]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    size = dict(dim=64, depth=2, heads=2, text_dim=32, conv_layers=1) if smoke else {}
    model = DiT(DiTConfig(text_num_embeds=len(vocab), **size))
    state = {f"ema_model.transformer.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model_1250000.safetensors")
    if smoke:
        arch = {"text_num_embeds": len(vocab), **size}
        (folder / "config.json").write_text(json.dumps({"arch": arch}))
    return folder
