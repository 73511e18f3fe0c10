"""Rollouts: run a step plan with a policy and a kernel.

A group is the G samples of one prompt. Samples are laid out prompt-major:
[p0 m0, p0 m1, ..., p0 m(G-1), p1 m0, ...], and ``Trajectories.group`` says which
prompt slot each sample belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignflow.sdk.batching import SHARED, batch_size, repeat_interleave
from alignflow.sdk.kernels import KERNELS, Kernel
from alignflow.sdk.plans import StepPlan
from alignflow.sdk.policy import FlowPolicy
from alignflow.sdk.random import generator


@dataclass
class Trajectories:
    """B rollouts, each with K recorded (trained) transitions.

    Attributes:
        x0: [B, ...] final latents (sigma = 0).
        x: [B, K, ...] the sample at the start of each trained step.
        x_next: [B, K, ...] the sample the kernel drew at that step.
        log_prob: [B, K] float32 log-prob of x_next under the rollout policy.
        mean: [B, K, ...] float32 mean of the rollout policy's Gaussian.
        std: [B, K] float32 std of the noise drawn.
        group: [B] long prompt slot of each sample.
        steps: [K] long indices i of the trained steps (shared by the batch).
        sigmas: [N+1] the schedule (shared by the batch).
        peeks: [B, M, ...] extra latents the trainer decodes and scores (DenseGRPO's
            ODE peeks), or None.
    """

    x0: torch.Tensor
    x: torch.Tensor
    x_next: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    group: torch.Tensor
    steps: torch.Tensor = field(metadata=SHARED)
    sigmas: torch.Tensor = field(metadata=SHARED)
    peeks: torch.Tensor | None = None


def rollout_generators(
    seed: int, iteration: int, slots: Sequence[int], group_size: int, shared: bool
) -> tuple[list[torch.Generator], list[torch.Generator]]:
    """The generators of the samples of prompt ``slots``: initial noise keyed by (seed,
    iteration, slot, member), or one per slot when the group shares it, and SDE noise
    keyed by (seed, iteration, slot, member). Never by the process: a sample is the same
    whichever process rolls it out."""
    noise = [
        generator(seed, "noise", iteration, s, m)
        for s in slots
        for m in range(1 if shared else group_size)
    ]
    sde = [generator(seed, "sde", iteration, s, m) for s in slots for m in range(group_size)]
    return noise, sde


def seeded_rollout(
    policy: FlowPolicy,
    cond: Any,
    sigmas: torch.Tensor,
    plan: StepPlan,
    kernel: Kernel,
    *,
    noise_level: float,
    guidance: float,
    group_size: int,
    seed: int,
    iteration: int,
    slots: Sequence[int],
    share_noise: bool,
) -> Trajectories:
    """:func:`rollout` of prompt ``slots`` with the generators of :func:`rollout_generators`
    (one initial noise per group if ``share_noise`` or the plan has a shared prefix)."""
    shared = share_noise or plan.shared_prefix > 0
    noise, sde = rollout_generators(seed, iteration, slots, group_size, shared)
    return rollout(
        policy,
        cond,
        sigmas,
        plan,
        kernel,
        noise_level=noise_level,
        guidance=guidance,
        group_size=group_size,
        noise_generators=noise,
        sde_generators=sde,
        share_noise=shared,
    )


@torch.no_grad()
def rollout(
    policy: FlowPolicy,
    cond: Any,
    sigmas: torch.Tensor,
    plan: StepPlan,
    kernel: Kernel,
    *,
    noise_level: float,
    guidance: float,
    group_size: int,
    noise_generators: Sequence[torch.Generator],
    sde_generators: Sequence[torch.Generator] | None = None,
    share_noise: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Trajectories:
    """Roll out ``group_size`` samples for each of the P prompts encoded in ``cond``.

    Args:
        cond: the policy's condition for P prompts (not repeated per member).
        sigmas: [N+1] schedule from ``policy.sigmas(N)``; ``plan`` has N steps.
        noise_generators: one generator per initial noise: P of them when the group
            shares its initial noise (``share_noise`` or a plan with a shared
            prefix), else P * G.
        sde_generators: P * G generators for the SDE noise (required if any step is SDE).
        callback: called as ``callback(i, x)`` after every step i.

    Returns:
        :class:`Trajectories` of B = P * G samples.
    """
    P, G, N = batch_size(cond), group_size, plan.num_steps
    if sigmas.shape != (N + 1,):
        raise ValueError(
            f"rollout: the plan has {N} steps but sigmas has shape {tuple(sigmas.shape)}"
        )
    shared = share_noise or plan.shared_prefix > 0
    n_noise = P if shared else P * G
    if len(noise_generators) != n_noise:
        raise ValueError(
            f"rollout: expected {n_noise} noise generators (shared={shared}), got "
            f"{len(noise_generators)}"
        )
    if any(plan.sde) and (sde_generators is None or len(sde_generators) != P * G):
        raise ValueError(f"rollout: SDE steps need {P * G} sde_generators")

    ode = KERNELS["ode"]
    x = policy.noise(n_noise, noise_generators)
    start = 0
    if shared:
        # The deterministic prefix is the same for the whole group: run it once per prompt.
        for i in range(plan.shared_prefix):
            x = _step(policy, ode, x, cond, sigmas, i, guidance, 0.0, None)
            if callback is not None:
                callback(i, x)
        start = plan.shared_prefix
        x = x.repeat_interleave(G, dim=0)
    cond = repeat_interleave(cond, G)

    rec: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", "x_next", "log_prob", "mean", "std")}
    for i in range(start, N):
        kern = kernel if plan.sde[i] else ode
        out = _step(
            policy, kern, x, cond, sigmas, i, guidance, noise_level, sde_generators, full=True
        )
        if plan.train[i]:
            rec["x"].append(x)
            rec["x_next"].append(out.x_next)
            rec["log_prob"].append(out.log_prob)
            rec["mean"].append(out.mean)
            rec["std"].append(out.std.flatten())
        x = out.x_next
        if callback is not None:
            callback(i, x)

    B, steps = P * G, plan.trained_steps
    stacked = {k: torch.stack(v, dim=1) if v else _empty(k, x, B) for k, v in rec.items()}
    return Trajectories(
        x0=x,
        group=torch.arange(P, device=x.device).repeat_interleave(G),
        steps=torch.tensor(steps, dtype=torch.long, device=x.device),
        sigmas=sigmas,
        **stacked,
    )


def _step(policy, kernel, x, cond, sigmas, i, guidance, noise_level, generators, full=False):
    sigma = sigmas[i].to(x.device).expand(x.shape[0])
    v = policy.velocity(x, sigma, cond, guidance)
    out = kernel(x, v, sigmas, i, noise_level=noise_level, generator=generators)
    return out if full else out.x_next


def _empty(key: str, x: torch.Tensor, B: int) -> torch.Tensor:
    if key in ("log_prob", "std"):
        return torch.zeros(B, 0, device=x.device)
    return torch.zeros(
        B, 0, *x.shape[1:], device=x.device, dtype=torch.float32 if key == "mean" else x.dtype
    )


@torch.no_grad()
def sample(
    policy: FlowPolicy,
    cond: Any,
    num_steps: int,
    *,
    guidance: float,
    noise_generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Deterministic (ODE) sampling of one sample per condition: [B, ...] latents."""
    sigmas = policy.sigmas(num_steps)
    traj = rollout(
        policy,
        cond,
        sigmas,
        StepPlan.deterministic(num_steps),
        KERNELS["ode"],
        noise_level=0.0,
        guidance=guidance,
        group_size=1,
        noise_generators=noise_generators,
    )
    return traj.x0
