"""Diagnostics that show reward hacking as it happens (logged every iteration).

- ``train/diversity``: the mean pairwise RMS distance between the final latents of a
  group's samples, averaged over groups. A policy collapsing onto one sample per prompt
  (a common way to hack a reward) drives it towards 0 while the reward still rises.
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
