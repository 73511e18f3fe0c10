"""Diagnostics that show reward hacking as it happens (logged every iteration).

- ``train/diversity``: the mean pairwise RMS distance between the final latents of a
  group's samples, averaged over groups. A policy collapsing onto one sample per prompt
  (a common way to hack a reward) drives it towards 0 while the reward still rises.
- ``train/kl_base``: the KL of the policy's step kernel to the base's (:func:`kl_drift`).
- ``train|eval/gold/<term>_mean``: held-out rewards (``gold:`` in the run config),
  scored on the same samples and never optimised: a reward that rises while its gold
  twin falls is being hacked.
"""

from __future__ import annotations

import torch


def group_diversity(x0: torch.Tensor, group: torch.Tensor) -> float:
    """Mean over groups of the mean pairwise RMS distance between members (groups of
    one sample are skipped; 0.0 if there is none)."""
    f = x0.detach().float().flatten(1)
    values = []
    for g in torch.unique(group):
        members = f[group == g]
        n = len(members)
        if n < 2:
            continue
        d = torch.cdist(members, members) / members.shape[1] ** 0.5
        values.append(d.sum() / (n * (n - 1)))
    return float(torch.stack(values).mean()) if values else 0.0


@torch.no_grad()
def kl_drift(policy, reference, x0: torch.Tensor, cond, sigmas: torch.Tensor, kernel, noise_level: float,
             guidance: float, generator: torch.Generator, probes: int = 8) -> float:
    """How far the policy has moved from the base: the KL between their one-step
    transition Gaussians, KL = mean_D (mu_theta - mu_base)^2 / (2 std^2), averaged over
    ``probes`` of the iteration's final samples re-noised (with ``generator``) to the
    sigmas of steps N/4, N/2 and 3N/4. ``kernel`` must be stochastic; ``reference`` is
    the context manager in which the policy is the base. Logged as ``train/kl_base``
    for every algorithm, also those trained without a KL term (MixGRPO, DanceGRPO,
    DiffusionNFT), where a growing value with a flat gold reward is the sign of drift."""
    from alignflow.sdk.batching import select
    from alignflow.sdk.random import randn

    B, N = x0.shape[0], len(sigmas) - 1
    idx = torch.linspace(0, B - 1, min(probes, B)).round().long()
    x0, cond = x0[idx.to(x0.device)].float(), select(cond, idx)
    steps = sorted({min(max(1, k), N - 2) for k in (N // 4, N // 2, 3 * N // 4)}) if N >= 3 else [0]
    kls = []
    for i in steps:
        s = sigmas[i].to(x0.device)
        x = ((1 - s) * x0 + s * randn(x0.shape, generator, device=x0.device)).to(x0.dtype)
        sigma = s.expand(len(x))
        mean = kernel(x, policy.velocity(x, sigma, cond, guidance), sigmas, i, noise_level=noise_level, prev_sample=x)
        with reference():
            base = kernel(x, policy.velocity(x, sigma, cond, guidance), sigmas, i, noise_level=noise_level,
                          prev_sample=x)
        kls.append(((mean.mean - base.mean) ** 2 / (2 * mean.std**2)).flatten(1).mean(1))
    return float(torch.cat(kls).mean())
