"""Where an iteration of the video default spends its time; and, on a GPU, the Wan 2.1
1.3B architecture against a plain WanPipeline call.

    .venv/bin/python benchmarks/video.py [--iterations 3] [--wan] [overrides ...]

1. Runs `experiment=video_shapes` (no evaluation, checkpoints or media) for a warm-up
   iteration and ``--iterations`` timed ones: wall clock and the trainer's split.
2. In the same process, on the same shapes, times each part alone: the rollout's
   denoiser forwards, decoding, the reward (optical flow) and training (forward +
   backward of the trained steps' micro-batches).
3. With ``--wan`` and CUDA: ``WanTransformer3DModel`` with Wan2.1-T2V-1.3B's config
   (30 layers, 12 heads x 128, FFN 8960; random weights, bf16), the full-size
   ``AutoencoderKLWan`` and a 1-layer UMT5 of width 4096 (the encoder's cost is not the
   question), at 33 frames of 480 x 832 (``--frames``, ``--height``, ``--width``):
   seconds per clip of the adapter's SDE rollout (batched CFG) and of
   ``WanPipeline.__call__`` with the same steps and guidance, peak memory of each, and
   one LoRA training step (one trained denoising step, gradient checkpointing).
Everything runs in one process, back to back: ratios are meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import iteration_split, parts, print_parts  # noqa: E402

from alignflow.sdk.config import compose  # noqa: E402
from alignflow.sdk.random import generator  # noqa: E402
from alignflow.sdk.trainer import Trainer  # noqa: E402


def wan_1_3b(frames: int, height: int, width: int, steps: int, guidance: float) -> None:
    """The Wan2.1-T2V-1.3B architecture on CUDA: adapter rollout vs WanPipeline."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from peft import LoraConfig

    from alignflow.adapters.tokenizers import t5_tokenizer
    from alignflow.adapters.video.tiny import _umt5
    from alignflow.adapters.video.wan import PipelinePromptEncoder, WanPolicy
    from alignflow.modalities.video.codec import WanVAECodec
    from alignflow.sdk.kernels import KERNELS
    from alignflow.sdk.plans import AllSDE
    from alignflow.sdk.rollout import rollout

    dev, dt = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
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
    ).to(dev, dt)
    vae = AutoencoderKLWan().to(dev, torch.float32).eval()
    tok = t5_tokenizer()
    encoder = _umt5(len(tok), 4096, 1).to(dev, dt).eval()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanPipeline(
        tokenizer=tok, text_encoder=encoder, transformer=transformer, vae=vae, scheduler=scheduler
    )
    codec = WanVAECodec(vae, fps=16.0)
    lat = (16, (frames - 1) // 4 + 1, height // 8, width // 8)
    enc = PipelinePromptEncoder(pipe, 512)
    enc.device = dev
    policy = WanPolicy(transformer, enc, codec, scheduler, lat, modules={"vae": vae})
    prompt = ["a red fox running through fresh snow, cinematic"]
    params = sum(p.numel() for p in transformer.parameters()) / 1e9
    print(
        f"\nWan2.1-1.3B architecture ({params:.2f}B params, bf16, random weights), {frames} frames "
        f"{height}x{width}, {steps} steps, guidance {guidance}, {torch.cuda.get_device_name()}"
    )

    def run_pipe():
        g = torch.Generator(dev).manual_seed(0)
        return pipe(
            prompt,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=g,
            output_type="pt",
        ).frames

    def run_adapter():
        cond = policy.encode(prompt)
        plan = AllSDE()(steps, 0, 0)
        traj = rollout(
            policy,
            cond,
            policy.sigmas(steps),
            plan,
            KERNELS["flow_sde"],
            noise_level=0.7,
            guidance=guidance,
            group_size=1,
            noise_generators=[generator("b", 0)],
            sde_generators=[generator("s", 0)],
        )
        return policy.decode(traj.x0)

    rows = []
    for name, fn in (
        ("WanPipeline.__call__ (UniPC, 2 calls/step)", run_pipe),
        ("adapter SDE rollout + decode (batched CFG)", run_adapter),
    ):
        with torch.no_grad():
            fn()  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
        rows.append((name, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30))
    transformer.add_adapter(
        LoraConfig(r=32, lora_alpha=64, target_modules=list(policy.default_lora_targets))
    )
    transformer.enable_gradient_checkpointing()
    cond = policy.encode(prompt)
    x = policy.noise(1, [generator("t", 0)])

    def train_step():
        v = policy.velocity(x, torch.tensor([0.7], device=dev), cond, guidance)
        v.float().pow(2).mean().backward()

    train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_step()
    torch.cuda.synchronize()
    rows.append(
        (
            "one training step (LoRA r32, grad ckpt, CFG)",
            time.perf_counter() - start,
            torch.cuda.max_memory_allocated() / 2**30,
        )
    )
    print(f"{'':<46}{'s/clip':>9}{'peak GiB':>10}")
    for name, sec, mem in rows:
        print(f"{name:<46}{sec:9.2f}{mem:10.1f}")
    print(f"adapter / pipeline time = {rows[1][1] / rows[0][1]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument(
        "--wan", action="store_true", help="also the Wan2.1-1.3B architecture (needs CUDA)"
    )
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose(
        "train",
        [
            "experiment=video_shapes",
            "output_dir=outputs/benchmark_video",
            "data.eval=",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            "logging.media=false",
            "checkpoint.overwrite=true",
            *args.overrides,
        ],
    )
    tr = Trainer(cfg)
    wall, split = iteration_split(tr, args.warmup, args.iterations)
    alone = parts(tr, "decode")
    s = cfg.sample
    print(
        f"video_shapes: {s.prompts_per_iteration} prompts x {s.group_size} clips of "
        f"{tr.policy.latent_shape}, "
        f"{s.num_steps} steps, {cfg.algorithm['name']}, {torch.get_num_threads()} threads"
    )
    print_parts(wall, split, alone)
    if args.wan:
        if not torch.cuda.is_available():
            print("\n--wan needs CUDA: skipped")
        else:
            wan_1_3b(args.frames, args.height, args.width, args.steps, 5.0)


if __name__ == "__main__":
    main()
