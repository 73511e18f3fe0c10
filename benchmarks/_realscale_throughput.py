"""benchmarks/realscale.py's rollout step: the adapter's rollout + decode against the
stock diffusers pipeline making the same samples (for F5, a plain Euler loop over the
same velocity), timed in one process."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from _realscale_models import F5, PROMPTS, SPEECH, WAN, Model


def throughput(model: Model, policy: Any, repeats: int, batch: int) -> dict[str, Any]:
    """Median seconds of the adapter's rollout + decode and of the stock pipeline (or,
    for F5, a plain Euler loop) on the same prompts, noise, steps and guidance."""
    from alignflow.sdk.kernels import KERNELS
    from alignflow.sdk.plans import StepPlan
    from alignflow.sdk.random import generator
    from alignflow.sdk.rollout import rollout

    B, N, w = batch, model.steps, model.guidance
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(B)]
    meta = None
    if model is F5:
        prompts = [SPEECH] * B
        meta = [{"ref_audio": "refs/slt_good_morning.wav", "ref_text": "good morning"}] * B
    gens = lambda: [generator("realscale", i) for i in range(B)]  # noqa: E731

    def adapter() -> torch.Tensor:
        cond = policy.encode(prompts, meta)
        sigmas = policy.sigmas(N).to(policy.device)
        traj = rollout(
            policy,
            cond,
            sigmas,
            StepPlan.deterministic(N),
            KERNELS["flow_sde"],
            noise_level=0.0,
            guidance=w,
            group_size=1,
            noise_generators=gens(),
            sde_generators=gens(),
        )
        # F5: the sampler only (the vocoder is the same either way)
        return traj.x0 if model is F5 else _pixels(policy.decode(traj.x0))

    def stock() -> torch.Tensor:
        if model is F5:
            return euler_loop(policy, prompts, meta, N, w, gens())
        pipe, res = policy.pipeline, {}
        if model is WAN:
            _, T, H, W = policy.latent_shape
            res = dict(height=H * 8, width=W * 8, num_frames=(T - 1) * 4 + 1, negative_prompt="")
        else:
            res = dict(height=policy_resolution(policy), width=policy_resolution(policy))
        out = pipe(
            prompts,
            num_inference_steps=N,
            guidance_scale=w,
            latents=policy.noise(B, gens()),
            output_type="pt",
            **res,
        )
        return _pixels(getattr(out, "frames", getattr(out, "images", None)))

    runs = {"stock": stock, "adapter": adapter}
    if getattr(policy, "pipeline", None) is not None:
        policy.pipeline.set_progress_bar_config(disable=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    outs = {}
    with torch.no_grad():
        for name, fn in runs.items():
            outs[name] = fn().float().cpu()  # warm-up, and the samples compared
        for _ in range(repeats):
            for name, fn in runs.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    t = {k: statistics.median(v) for k, v in times.items()}
    diff = None
    if outs["stock"].shape == outs["adapter"].shape:
        diff = float((outs["stock"] - outs["adapter"]).abs().max())
    return {
        "stock_s": t["stock"],
        "adapter_s": t["adapter"],
        "ratio": t["adapter"] / t["stock"],
        "samples_max_abs_diff": diff,
        "batch": B,
        "steps": N,
        "guidance": w,
        "repeats": repeats,
    }


def policy_resolution(policy: Any) -> int:
    return getattr(policy, "resolution", None) or policy.latent_shape[1] * policy.codec.scale_factor


def _pixels(media: Any) -> torch.Tensor:
    return getattr(media, "frames", media)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def euler_loop(policy: Any, prompts, meta, steps: int, guidance: float, gens) -> torch.Tensor:
    """F5's sampling written plainly: x <- x + (sigma_{i+1} - sigma_i) v(x, sigma_i)."""
    cond = policy.encode(prompts, meta)
    sigmas = policy.sigmas(steps).to(policy.device)
    x = policy.noise(len(prompts), gens)
    for i in range(steps):
        v = policy.velocity(x, sigmas[i], cond, guidance)
        x = x + (sigmas[i + 1] - sigmas[i]) * v.float()
    return x
