"""Shared helpers: a tiny, fast variant of the image_digits experiment."""

from pathlib import Path

from alignflow.sdk.config import compose

FAST = [
    "experiment=image_digits",
    "sample.num_steps=4",
    "sample.group_size=4",
    "sample.prompts_per_iteration=2",
    "sample.batch_size=8",
    "train.micro_batch_size=8",
    "train.optimizer_steps=2",
    "train.iterations=2",
    "eval.num_steps=4",
    "eval.samples_per_prompt=1",
    "eval.every=0",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
    "logging.media=false",
]


def digits_cfg(out: Path, *overrides: str):
    """RunConfig of the fast digits run writing to ``out``."""
    return compose("train", [*FAST, f"output_dir={out}", *overrides])


def strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def save_tiny_clip(folder: Path) -> Path:
    """A random CLIPModel (projection 12) and CLIPProcessor (32 px) saved to ``folder``."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    from alignflow.adapters.tokenizers import clip_tokenizer

    torch.manual_seed(0)
    text = CLIPTextConfig(
        vocab_size=len(clip_tokenizer()),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPModel(
        CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=12)
    ).save_pretrained(folder)
    size = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=size, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return folder


def checkpointing_matches(plain, saving, blocks, x, sigma, cond, guidance: float) -> int:
    """Loss v^2 and the transformer's weight gradients of ``plain`` and ``saving`` (the
    same weights, gradient checkpointing on) agree; returns how many times the first
    block ran in ``saving``'s forward and backward (2 when it was recomputed)."""
    import torch

    runs = []
    hook = blocks[0].register_forward_pre_hook(lambda *_: runs.append(1))
    results = []
    for i, policy in enumerate((plain, saving)):
        params = list(policy.transformer.parameters())
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        if i == 1:
            runs.clear()
        loss = policy.velocity(x, sigma, cond[i], guidance).square().mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in params]))
        for p in params:
            p.requires_grad_(False)
    hook.remove()
    (la, ga), (lb, gb) = results
    torch.testing.assert_close(la, lb)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    return len(runs)


def ode_rollout(policy, cond, steps: int, guidance: float):
    """A noise-level-0 rollout of ``cond``'s samples (one each) and the initial noise it
    drew, for comparisons with a stock pipeline given the same noise."""
    from alignflow.sdk.kernels import KERNELS
    from alignflow.sdk.plans import AllSDE
    from alignflow.sdk.random import generator
    from alignflow.sdk.rollout import rollout

    B = len(cond.embeds)
    gens = lambda: [generator("t", i) for i in range(B)]  # noqa: E731
    traj = rollout(
        policy,
        cond,
        policy.sigmas(steps),
        AllSDE()(steps, 0, 0),
        KERNELS["flow_sde"],
        noise_level=0.0,
        guidance=guidance,
        group_size=1,
        noise_generators=gens(),
        sde_generators=gens(),
    )
    return traj, policy.noise(B, gens())


TINY_IMAGE_RUN = [
    "+reward.red.name=tests.adapters.image_rewards_for_tests:Redness",
    "sample.num_steps=4",
    "sample.group_size=2",
    "sample.prompts_per_iteration=2",
    "sample.batch_size=4",
    "train.micro_batch_size=4",
    "train.iterations=1",
    "train.lora_rank=4",
    "train.lora_alpha=8",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
    "logging.media=false",
]
"""One LoRA iteration of 2 prompts x 2 samples, 4 steps, with the test reward that
likes red (the tests of the tiny image pipelines)."""


def tiny_image_cfg(out, kind, folder, prompts_file, *extra):
    """:data:`TINY_IMAGE_RUN` of a tiny saved SD3 / FLUX pipeline (``kind``: the policy
    name) at 32 px."""
    return compose(
        "train",
        [
            f"policy.name={kind}",
            f"+policy.path={folder}",
            "+policy.resolution=32",
            "+policy.dtype=float32",
            "+policy.attention=sdpa",
            f"data.train={prompts_file}",
            *TINY_IMAGE_RUN,
            f"sample.guidance={4.5 if kind == 'sd3' else 3.5}",
            f"output_dir={out}",
            *extra,
        ],
    )
