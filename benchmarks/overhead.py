"""Where an iteration of the image_digits demo spends its time, and how much of it the
trainer adds on top of the model's own forward and backward passes.

    .venv/bin/python benchmarks/overhead.py [--iterations 10] [overrides ...]

1. Runs the demo's configuration (no evaluation, checkpoints or media) for a few warm-up
   iterations, then times ``--iterations`` iterations: wall clock, and the trainer's
   own split into rollout / reward (waiting for the worker) / training / other.
2. In the same process, on the same shapes, times the bare model work the iteration
   must do: the rollout's N denoiser forwards, the reward model, and per training
   micro-batch one forward + backward (plus the reference forward when the KL is on).
3. Prints both and their ratio. Everything runs in one process, back to back, so the
   ratio is meaningful on a noisy machine even when absolute seconds are not.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from alignflow.sdk.batching import repeat_interleave
from alignflow.sdk.cli import compose
from alignflow.sdk.random import generator
from alignflow.sdk.trainer import Trainer


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def model_only(tr: Trainer) -> dict[str, float]:
    """Seconds of bare model work for one iteration of this configuration."""
    cfg, policy = tr.cfg, tr.policy
    G, N, P = cfg.sample.group_size, cfg.sample.num_steps, cfg.sample.prompts_per_iteration
    B = G * P // tr.acc.num_processes
    prompts = [tr.train_set.prompts[i % len(tr.train_set)] for i in range(P)]
    meta = [tr.train_set.metadata[i % len(tr.train_set)] for i in range(P)]
    cond = repeat_interleave(policy.encode(prompts, meta), G)
    x = policy.noise(B, [generator("bench", b) for b in range(B)])
    sigma = torch.full((B,), 0.5)
    guidance = cfg.sample.guidance

    def rollout_forwards():
        with torch.no_grad():
            for _ in range(N):
                policy.velocity(x, sigma, cond, guidance)

    media = policy.decode(x)
    reward_prompts = [p for p in prompts for _ in range(G)]
    reward_meta = [m for m in meta for _ in range(G)]

    K = len(tr.algo.plan(N, 0, cfg.seed).trained_steps)
    E = B * K * cfg.train.inner_epochs
    mb = cfg.train.micro_batch_size
    n_micro, last = divmod(E, mb)

    def micro_batch(size):
        xs, c = x[:size], _take(cond, size)
        v = policy.velocity(xs, sigma[:size], c, guidance)
        v.float().pow(2).mean().backward()
        if tr.algo.needs_reference:
            with torch.no_grad(), tr.finetune.reference():
                policy.velocity(xs, sigma[:size], c, guidance)

    def training():
        for _ in range(n_micro):
            micro_batch(mb)
        if last:
            micro_batch(last)
        tr.optimizer.zero_grad(set_to_none=True)

    return {
        "rollout": timed(rollout_forwards, 3),
        "reward": timed(lambda: tr.reward(media, reward_prompts, reward_meta), 3),
        "training": timed(training, 2),
    }


def _take(cond, n):
    from alignflow.sdk.batching import select

    return select(cond, torch.arange(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose("train", ["experiment=image_digits", "output_dir=outputs/benchmark_overhead", "data.eval=",
                            "logging.progress_bar=false", "logging.tensorboard=false", "logging.media=false",
                            "checkpoint.overwrite=true", *args.overrides])
    tr = Trainer(cfg)
    for it in range(args.warmup):
        tr.train_iteration(it)
    walls, phases = [], []
    for it in range(args.warmup, args.warmup + args.iterations):
        start = time.perf_counter()
        m = tr.train_iteration(it)
        walls.append(time.perf_counter() - start)
        phases.append({k: m[f"time/{k}"] for k in ("rollout", "reward", "train")})
    wall = statistics.mean(walls)
    split = {k: statistics.mean(p[k] for p in phases) for k in ("rollout", "reward", "train")}
    split["other"] = wall - sum(split.values())
    bare = model_only(tr)
    bare_total = sum(bare.values())

    print(f"image_digits, {cfg.sample.prompts_per_iteration} prompts x {cfg.sample.group_size} samples, "
          f"{cfg.sample.num_steps} steps, micro-batch {cfg.train.micro_batch_size}, "
          f"{torch.get_num_threads()} threads, mean of {args.iterations} iterations")
    print(f"{'phase':<10}{'trainer s/it':>14}{'share':>8}{'model-only s':>14}")
    names = {"rollout": "rollout", "reward": "reward", "train": "training", "other": "other"}
    for k, v in split.items():
        bare_v = bare.get(names[k])
        bare_s = f"{bare_v:14.3f}" if bare_v is not None else f"{'-':>14}"
        print(f"{names[k]:<10}{v:14.3f}{v / wall:8.1%}{bare_s}")
    print(f"{'total':<10}{wall:14.3f}{1:8.1%}{bare_total:14.3f}")
    print(f"trainer wall / model forward+backward = {wall / bare_total:.2f}x; other = {split['other'] / wall:.1%} "
          f"of the iteration (target <= 10%)")


if __name__ == "__main__":
    main()
