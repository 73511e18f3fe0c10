"""Diagnostics that show reward hacking as it happens (logged every iteration).

- ``train/diversity``: the mean pairwise RMS distance between the final latents of a
  group's samples, averaged over groups. A policy collapsing onto one sample per prompt
  (a common way to hack a reward) drives it towards 0 while the reward still rises.
- ``train/kl_base``: the KL of the policy's step kernel to the base's (:func:`kl_drift`),
  probed at the first sample of every group.
- ``train|eval/gold/<term>_mean``: held-out rewards (``gold:`` in the run config),
  scored on the same samples and never optimised: a reward that rises while its gold
  twin falls is being hacked.

The trainer gathers the first two over processes; neither depends on how prompts are
spread over them.
"""

from __future__ import annotations

import torch

from alignflow.sdk.random import randn


def group_diversities(x0: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """[groups] the mean pairwise RMS distance between each group's members, in group id
    order (groups of one sample left out): what several processes gather."""
    f = x0.detach().float().flatten(1)
    values = []
    for g in torch.unique(group):
        members = f[group == g]
        n = len(members)
        if n < 2:
            continue
        d = torch.cdist(members, members) / members.shape[1] ** 0.5
        values.append(d.sum() / (n * (n - 1)))
    return torch.stack(values) if values else torch.zeros(0)


@torch.no_grad()
def kl_drift(
    policy,
    reference,
    x0: torch.Tensor,
    cond,
    sigmas: torch.Tensor,
    kernel,
    noise_level: float,
    guidance: float,
    generators,
) -> torch.Tensor:
    """How far the policy has moved from the base, per probe sample [b]: the KL between
    their one-step transition Gaussians, KL = mean_D (mu_theta - mu_base)^2 / (2 std^2),
    averaged over the sigmas of steps N/4, N/2 and 3N/4, at the probes' final samples
    ``x0`` [b, ...] re-noised with one generator per probe (``generators``).
    ``kernel`` must be stochastic; ``reference`` is the context manager in which the
    policy is the base. The trainer logs the mean as ``train/kl_base`` for every
    algorithm, also those trained without a KL term (MixGRPO, DanceGRPO, DiffusionNFT),
    where a growing value with a flat gold reward is the sign of drift."""
    N = len(sigmas) - 1
    x0 = x0.float()
    steps = sorted({min(max(1, k), N - 2) for k in (N // 4, N // 2, 3 * N // 4)}) if N >= 3 else [0]
    kls = []
    for i in steps:
        s = sigmas[i].to(x0.device)
        # each probe's generator: the next draw per step
        eps = randn(x0.shape, generators, device=x0.device)
        x = ((1 - s) * x0 + s * eps).to(x0.dtype)
        sigma = s.expand(len(x))
        mean = kernel(
            x,
            policy.velocity(x, sigma, cond, guidance),
            sigmas,
            i,
            noise_level=noise_level,
            x_next=x,
        )
        with reference():
            base = kernel(
                x,
                policy.velocity(x, sigma, cond, guidance),
                sigmas,
                i,
                noise_level=noise_level,
                x_next=x,
            )
        kls.append(((mean.mean - base.mean) ** 2 / (2 * mean.std**2)).flatten(1).mean(1))
    return torch.stack(kls).mean(0)


def drift_from_base(
    policy, reference, algorithm, rollout, cond, cfg, iteration: int
) -> torch.Tensor:
    """:func:`kl_drift` [b] at the first sample of every group of ``rollout``, on the
    run's (``cfg``) sampling schedule and guidance, re-noised by generators keyed by
    (seed, iteration, slot): the same probes however the groups are spread over
    processes. The algorithm's SDE kernel and noise level, or Flow-GRPO's SDE at 0.7 for
    an ODE-only recipe."""
    from alignflow.sdk.advantages import members
    from alignflow.sdk.batching import select
    from alignflow.sdk.kernels import get_kernel
    from alignflow.sdk.random import generator

    probes = [b for b, m in enumerate(members(rollout.group)) if m == 0]
    gens = [generator(cfg.seed, "drift", iteration, int(rollout.group[b])) for b in probes]
    kernel = algorithm.kernel if algorithm.kernel.stochastic else get_kernel("flow_sde")
    return kl_drift(
        policy,
        reference,
        rollout.x0[probes],
        select(cond, probes),
        policy.sigmas(cfg.sample.num_steps).to(rollout.x0.device),
        kernel,
        algorithm.noise_level or 0.7,
        cfg.sample.guidance,
        gens,
    )


def finite_mean(v: torch.Tensor) -> float:
    v = v[torch.isfinite(v)]
    return v.mean().item() if len(v) else float("nan")


def finite_std(v: torch.Tensor) -> float:
    v = v[torch.isfinite(v)]
    return v.std(unbiased=False).item() if len(v) else float("nan")
