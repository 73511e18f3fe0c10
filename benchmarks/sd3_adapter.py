"""The SD3 adapter: where an iteration goes, and whether alignflow's rollout is as fast
as diffusers' own pipeline making the same images.

    .venv/bin/python benchmarks/sd3_adapter.py            # tiny SD3 on this machine
    .venv/bin/python benchmarks/sd3_adapter.py --full     # SD3.5-medium architecture (GPU)

Tiny (default): a real ``StableDiffusion3Pipeline`` at tiny size (random weights)
saved to a temporary folder and loaded through ``load_sd3_policy``.
1. A Flow-GRPO iteration with the JPEG reward: the trainer's split (rollout / reward /
   training / other) next to the bare model work on the same shapes.
2. Rollout vs pipeline, same prompts, noise, steps and CFG, interleaved repeats in one
   process: ``StableDiffusion3Pipeline.__call__`` to images, against alignflow's rollout
   (ODE, and the Flow-GRPO SDE with log-probs) plus decode. Target ratio <= 1.1.

--full (CUDA): the SD3.5-medium *architecture* (24-layer MMDiT, 16-channel VAE) with
random weights in bf16 at 512 px and random text embeddings in place of the text
encoders: rollout images/s, peak GPU memory, and the time of one LoRA training step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import iteration_split, model_only, print_split  # noqa: E402

from alignflow.sdk.kernels import KERNELS  # noqa: E402
from alignflow.sdk.plans import AllSDE, StepPlan  # noqa: E402
from alignflow.sdk.random import generator  # noqa: E402
from alignflow.sdk.rollout import rollout  # noqa: E402

PROMPTS = ["a red cat", "a blue car", "two dogs in the snow", 'a sign that says "open"']


def rollout_vs_pipeline(
    policy, batch: int, steps: int, guidance: float, repeats: int
) -> dict[str, float]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    res = policy.latent_shape[1] * policy.codec.scale_factor
    gens = lambda: [generator("bench", i) for i in range(batch)]  # noqa: E731
    sde_plan, ode_plan = AllSDE()(steps, 0, 0), StepPlan.deterministic(steps)

    def pipeline():
        noise = policy.noise(batch, gens())
        return policy.pipeline(
            prompts,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=res,
            width=res,
            latents=noise,
            output_type="pt",
        ).images

    def ours(plan):
        def run():
            cond = policy.encode(prompts)
            traj = rollout(
                policy,
                cond,
                policy.sigmas(steps),
                plan,
                KERNELS["flow_sde"],
                noise_level=0.7,
                guidance=guidance,
                group_size=1,
                noise_generators=gens(),
                sde_generators=gens(),
            )
            return policy.decode(traj.x0)

        return run

    runs = {"pipeline": pipeline, "rollout_ode": ours(ode_plan), "rollout_sde": ours(sde_plan)}
    policy.pipeline.set_progress_bar_config(disable=True)
    times = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in runs.items():
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def tiny(args) -> None:
    from alignflow.adapters.image.tiny import tiny_sd3_pipeline
    from alignflow.sdk.config import compose
    from alignflow.sdk.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tiny_sd3_pipeline().save_pretrained(Path(tmp) / "sd3")
        (Path(tmp) / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
        cfg = compose(
            "train",
            [
                "experiment=sd35_pickscore",
                f"policy.path={tmp}/sd3",
                "policy.resolution=32",
                "policy.dtype=float32",
                "~reward.pickscore",
                "+reward.jpeg.name=jpeg_compressibility",
                f"data.train={tmp}/prompts.txt",
                "data.eval=",
                "sample.group_size=4",
                "sample.prompts_per_iteration=4",
                "sample.batch_size=8",
                "train.micro_batch_size=16",
                "train.mixed_precision=no",
                f"output_dir={tmp}/run",
                "logging.progress_bar=false",
                "logging.tensorboard=false",
                "logging.media=false",
            ],
        )
        tr = Trainer(cfg)
        wall, split = iteration_split(tr, args.warmup, args.iterations)
        print_split(
            "tiny SD3 (StableDiffusion3Pipeline from disk), 32 px, 4 prompts x 4 samples, 10 "
            f"steps, CFG 4.5, mean of {args.iterations} iterations",
            wall,
            split,
            model_only(tr),
        )
        t = rollout_vs_pipeline(tr.policy, batch=16, steps=10, guidance=4.5, repeats=args.repeats)
    print(
        f"\nrollout vs diffusers pipeline, 16 images, 10 steps, CFG 4.5, median of {args.repeats}:"
    )
    for name, sec in t.items():
        print(f"  {name:<12} {sec:8.3f} s   {sec / t['pipeline']:.3f}x the pipeline")


def full(args) -> None:
    """SD3.5-medium architecture, random weights, bf16, on CUDA."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    from alignflow.adapters.image.sd3 import SD3Policy
    from alignflow.modalities.image.codec import VAECodec
    from alignflow.sdk.finetune import LoRA

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    res, batch, steps = args.resolution, args.batch, args.steps
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=args.layers,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=384,
        dual_attention_layers=tuple(range(min(13, args.layers))),
        qk_norm="rms_norm",
    ).to(device, dtype)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).to(device, dtype)

    def random_text(prompts):  # stands in for CLIP-L + CLIP-G + T5-XXL: 333 tokens of width 4096
        g = torch.Generator().manual_seed(len(prompts))
        return (
            torch.randn(len(prompts), 333, 4096, generator=g).to(device, dtype),
            torch.randn(len(prompts), 2048, generator=g).to(device, dtype),
        )

    policy = SD3Policy(
        transformer,
        random_text,
        VAECodec(vae),
        FlowMatchEulerDiscreteScheduler(shift=3.0),
        latent_shape=(16, res // 8, res // 8),
    )
    lora = LoRA(policy, rank=32, alpha=64)
    prompts = ["a prompt"] * batch
    cond = policy.encode(prompts)
    sigmas = policy.sigmas(steps).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def do_rollout():
        traj = rollout(
            policy,
            cond,
            sigmas,
            AllSDE()(steps, 0, 0),
            KERNELS["flow_sde"],
            noise_level=0.7,
            guidance=4.5,
            group_size=1,
            noise_generators=[generator(i) for i in range(batch)],
            sde_generators=[generator("s", i) for i in range(batch)],
        )
        policy.decode(traj.x0)
        return traj

    traj = do_rollout()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    do_rollout()
    sync()
    roll = time.perf_counter() - start
    opt = torch.optim.AdamW(lora.parameters(), lr=1e-4)
    x, step = traj.x[:, 0], traj.steps[0]

    def train_step():
        v = policy.velocity(x, sigmas[step].expand(batch), cond, 4.5)
        out = KERNELS["flow_sde"](
            x, v, sigmas, int(step), noise_level=0.7, x_next=traj.x_next[:, 0]
        )
        out.log_prob.mean().backward()
        opt.step()
        opt.zero_grad()

    train_step()
    sync()
    start = time.perf_counter()
    train_step()
    sync()
    train = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(
        f"SD3.5-medium architecture ({args.layers} of 24 layers), random weights, {args.dtype}, "
        f"{res} px, {device}:"
    )
    print(
        f"  rollout ({steps} SDE steps, CFG 4.5, batch {batch}, with VAE decode): {roll:.2f} s = "
        f"{batch / roll:.2f} images/s"
    )
    print(f"  training step (LoRA r32, CFG 4.5, batch {batch} transitions): {train:.2f} s")
    print(f"  peak GPU memory: {peak:.1f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--full", action="store_true", help="SD3.5-medium architecture (needs CUDA to be quick)"
    )
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="--full: rollout steps")
    ap.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float16", "float32"],
        help="--full: model dtype (float32 for a CPU smoke run: bf16 convolutions are slow on CPU)",
    )
    ap.add_argument(
        "--layers",
        type=int,
        default=24,
        help="--full: transformer blocks (24 = SD3.5-medium; fewer for a smoke run on a CPU)",
    )
    args = ap.parse_args()
    full(args) if args.full else tiny(args)


if __name__ == "__main__":
    main()
