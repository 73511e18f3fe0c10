"""Timing helpers shared by the benchmarks: an iteration's phases as the trainer
reports them, and the bare model work of the same iteration on the same shapes."""

from __future__ import annotations

import statistics
import time

import torch

from alignflow.sdk.batching import batch_size, concat, repeat_interleave, select
from alignflow.sdk.random import generator
from alignflow.sdk.trainer import Trainer


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def items_per_sample(tr: Trainer) -> int:
    """Training items per rollout sample in iteration 0 of ``tr``'s recipe, from its own
    rollout and training items (the trained steps of an SDE recipe, the trained
    timesteps of DiffusionNFT, the kept edges of a tree)."""
    batches = tr.rollout(0)
    scored = tr.score(batches)
    rollout = concat([b.rollout for b in batches])
    _, adv = tr.advantages(rollout, scored)
    n = len(scored.reward.scores)
    items = tr.algo.training_items(
        rollout,
        adv.advantages[:n],
        rewards=scored.reward.scores,
        peek_rewards=scored.peeks,
        seed=tr.cfg.seed,
        iteration=0,
    )
    return max(1, round(batch_size(items) / n))


def reference_forwards(tr: Trainer) -> int:
    """No-grad forwards per trained item besides the trained one: the reference's (KL),
    and DiffusionNFT's old policy."""
    return int(tr.algo.needs_reference(tr.algo.cfg)) + int(tr.algo.name == "diffusion_nft")


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

    K = items_per_sample(tr)
    E = B * K * cfg.train.inner_epochs
    mb = cfg.train.micro_batch_size
    n_micro, last = divmod(E, mb)

    def micro_batch(size):
        xs, c = x[:size], _take(cond, size)
        v = policy.velocity(xs, sigma[:size], c, guidance)
        v.float().pow(2).mean().backward()
        for _ in range(reference_forwards(tr)):
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
    return select(cond, torch.arange(n))


def iteration_split(tr: Trainer, warmup: int, iterations: int) -> tuple[float, dict[str, float]]:
    """Mean wall seconds per iteration and the trainer's split (rollout / reward / train /
    other)."""
    for it in range(warmup):
        tr.train_iteration(it)
    walls, phases = [], []
    for it in range(warmup, warmup + iterations):
        start = time.perf_counter()
        m = tr.train_iteration(it)
        walls.append(time.perf_counter() - start)
        phases.append({k: m[f"time/{k}"] for k in ("rollout", "reward", "train")})
    wall = statistics.mean(walls)
    split = {k: statistics.mean(p[k] for p in phases) for k in ("rollout", "reward", "train")}
    split["other"] = wall - sum(split.values())
    return wall, split


def print_split(title: str, wall: float, split: dict[str, float], bare: dict[str, float]) -> None:
    bare_total = sum(bare.values())
    print(title)
    print(f"{'phase':<10}{'trainer s/it':>14}{'share':>8}{'model-only s':>14}")
    names = {"rollout": "rollout", "reward": "reward", "train": "training", "other": "other"}
    for k, v in split.items():
        bare_v = bare.get(names[k])
        bare_s = f"{bare_v:14.3f}" if bare_v is not None else f"{'-':>14}"
        print(f"{names[k]:<10}{v:14.3f}{v / wall:8.1%}{bare_s}")
    print(f"{'total':<10}{wall:14.3f}{1:8.1%}{bare_total:14.3f}")
    print(
        f"trainer wall / model forward+backward = {wall / bare_total:.2f}x; other = "
        f"{split['other'] / wall:.1%} "
        f"of the iteration (target <= 10%)"
    )


def parts(tr: Trainer, decode: str = "decode") -> dict[str, float]:
    """Seconds of each part of one iteration of ``tr``'s configuration, timed alone on
    the iteration's shapes: the rollout's denoiser forwards, decoding (named ``decode``:
    the vocoder, the VAE), each reward term, and training (forward + backward of the
    trained steps' micro-batches, plus the reference forward when the algorithm has one;
    for DiffusionNFT its trained sigmas and the old policy's forward)."""
    cfg, policy = tr.cfg, tr.policy
    G, N, P = cfg.sample.group_size, cfg.sample.num_steps, cfg.sample.prompts_per_iteration
    rows = [tr.train_set.metadata[i] for i in range(P)]
    prompts = [tr.train_set.prompts[i] for i in range(P)]
    cond = repeat_interleave(policy.encode(prompts, rows), G)
    B = P * G
    x = policy.noise(B, [generator("bench", b) for b in range(B)])
    sigma = torch.full((B,), 0.5)

    def denoiser():
        with torch.no_grad():
            for _ in range(N):
                policy.velocity(x, sigma, cond, cfg.sample.guidance)

    media = policy.decode(x, cond)
    p_rep, m_rep = [p for p in prompts for _ in range(G)], [m for m in rows for _ in range(G)]
    terms = {name: r for name, (r, _) in tr.reward.terms.items()}
    mb, K, no_grad_forwards = (
        cfg.train.micro_batch_size,
        items_per_sample(tr),
        reference_forwards(tr),
    )

    def training():
        for start in range(0, B * K, mb):
            idx = torch.arange(min(mb, B * K - start)) % B
            v = policy.velocity(x[idx], sigma[idx], select(cond, idx), cfg.sample.guidance)
            v.float().pow(2).mean().backward()
            for _ in range(no_grad_forwards):
                with torch.no_grad(), tr.finetune.reference():
                    policy.velocity(x[idx], sigma[idx], select(cond, idx), cfg.sample.guidance)
        tr.optimizer.zero_grad(set_to_none=True)

    out = {
        "rollout (denoiser)": timed(denoiser, 1),
        decode: timed(lambda: policy.decode(x, cond), 2),
    }
    for name, reward in terms.items():
        out[f"reward: {name}"] = timed(lambda r=reward: r(media, p_rep, m_rep), 2)
    out["training"] = timed(training, 1)
    return out


def print_parts(wall: float, split: dict[str, float], alone: dict[str, float]) -> None:
    """The trainer's phases of an iteration, then the parts timed alone."""
    print(f"{'trainer phase':<22}{'s/it':>8}{'share':>8}")
    for k, v in split.items():
        print(f"{k:<22}{v:8.2f}{v / wall:8.1%}")
    print(f"{'total':<22}{wall:8.2f}")
    print(f"\n{'part, timed alone':<34}{'s/it':>8}{'share':>8}")
    total = sum(alone.values())
    for k, v in alone.items():
        print(f"{k:<34}{v:8.2f}{v / total:8.1%}")
    print(f"{'sum':<34}{total:8.2f}   (trainer wall / sum of parts = {wall / total:.2f}x)")
