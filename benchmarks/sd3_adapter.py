"""The SD3 adapter: where an iteration goes, and whether alignflow's rollout is as fast
as diffusers' own pipeline making the same images.

    .venv/bin/python benchmarks/sd3_adapter.py

A real ``StableDiffusion3Pipeline`` at tiny size (random weights)
saved to a temporary folder and loaded through ``load_sd3_policy``.
1. A Flow-GRPO iteration with the JPEG reward: the trainer's split (rollout / reward /
   training / other) next to the bare model work on the same shapes.
2. Rollout vs pipeline, same prompts, noise, steps and CFG, interleaved repeats in one
   process: ``StableDiffusion3Pipeline.__call__`` to images, against alignflow's rollout
   (ODE, and the Flow-GRPO SDE with log-probs) plus decode. Target ratio <= 1.1.

The SD3.5-medium architecture at full size is benchmarks/realscale.py's (GPU).
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tiny(args)


if __name__ == "__main__":
    main()
