"""Real diffusers SD3 and FLUX pipelines at tiny size, built offline from config.

Every class is the one the full-size model uses (``SD3Transformer2DModel``,
``FluxTransformer2DModel``, ``AutoencoderKL``, ``CLIPTextModelWithProjection``,
``CLIPTextModel``, ``T5EncoderModel``, ``CLIPTokenizer``, ``T5Tokenizer``); only the sizes are
small and the weights random. The tokenizers are built from a character vocabulary,
so nothing is downloaded. Tests save these pipelines with ``save_pretrained`` and
load them back through the adapters' real loading path; benchmarks time them.
"""

from __future__ import annotations

import torch

from alignflow.adapters.tokenizers import clip_tokenizer, t5_tokenizer


def _clip_text(vocab: int, hidden: int, projection: bool, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        projection_dim=hidden,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5(vocab: int, d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab,
            d_model=d_model,
            d_ff=2 * d_model,
            d_kv=8,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def _vae(latent_channels: int, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=latent_channels,
        norm_num_groups=2,
        sample_size=32,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def tiny_sd3_pipeline(seed: int = 0, with_t5: bool = True):
    """A ``StableDiffusion3Pipeline``: 2-layer MMDiT, 2x VAE, two CLIPs and T5."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    tok = clip_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        pos_embed_max_size=16,
    )
    t5 = _t5(len(t5_tokenizer()), 32, seed + 3) if with_t5 else None
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4, seed + 4),
        text_encoder=_clip_text(len(tok), 8, True, seed + 1),
        tokenizer=tok,
        text_encoder_2=_clip_text(len(tok), 8, True, seed + 2),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer() if with_t5 else None,
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True, kontext: bool = False):
    """A ``FluxPipeline`` (``kontext``: a ``FluxKontextPipeline``, the same parts): 1
    double + 1 single block, 2x VAE, CLIP (pooled) and T5."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    tok = clip_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        shift=3.0,
    )
    return (FluxKontextPipeline if kontext else FluxPipeline)(
        transformer=transformer,
        scheduler=scheduler,
        vae=_vae(4, seed + 4),
        text_encoder=_clip_text(len(tok), 16, False, seed + 1),
        tokenizer=tok,
        text_encoder_2=_t5(len(t5_tokenizer()), 32, seed + 3),
        tokenizer_2=t5_tokenizer(),
    )


def tiny_qwen_edit_pipeline(seed: int = 0, max_vision_pixels: int = 56 * 56):
    """A ``QwenImageEditPipeline``: a 2-layer QwenImage transformer, a 2x one-frame
    ``AutoencoderKLQwenImage``, and a 2-layer Qwen2.5-VL (2 vision blocks) with its
    processor; the processor shrinks every source to at most ``max_vision_pixels``
    before the vision tower reads it."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from alignflow.adapters.tokenizers import QWEN_SPECIALS, qwen_tokenizer

    tok = qwen_tokenizer()
    ids = dict(zip(QWEN_SPECIALS, tok.convert_tokens_to_ids(list(QWEN_SPECIALS))))
    pixels = {"min_pixels": 28 * 28, "max_pixels": max_vision_pixels}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**pixels),
    )
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed + 1)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2],
        num_res_blocks=1,
        temperal_downsample=[False],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 1.2, 1.0],
    )
    # Qwen-Image's scheduler settings (exponential shift, stretched to 0.02)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    return QwenImageEditPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        processor=processor,
        transformer=transformer,
    )
