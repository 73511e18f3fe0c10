"""Credit assignment: from rewards to advantages.

Group-relative advantages (GRPO; Flow-GRPO arXiv 2505.05470, DanceGRPO arXiv
2505.07818): for the G samples of one prompt with rewards r,

    A = clamp((r - mean_group(r)) / (std(r) + eps), -A_max, A_max)

with the population std (ddof = 0) of the group itself (``std="group"``) or of every
reward of the iteration (``std="global"``; the caller gathers rewards across
processes first). A sample whose reward is NaN ("not applicable", or dropped after a
reward failure) is left out of its group's statistics and gets A = 0.

With several reward terms r_k (weights w_k), ``aggregate="reward"`` z-scores the
weighted sum (Flow-GRPO), ``aggregate="advantage"`` z-scores each term within the
group and sums, A = clamp(sum_k w_k z_k, -A_max, A_max) (DanceGRPO, MixGRPO's
``advantage_aggr``): a term with a small spread then counts as much as one with a
large spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STD_MODES = ("group", "global")
AGGREGATES = ("reward", "advantage")


@dataclass
class GroupAdvantages:
    """Advantages [B] and what the statistics looked like.

    Attributes:
        advantages: [B] float32, 0 for invalid samples.
        zero_std_fraction: fraction of groups whose rewards are all equal (they teach
            nothing: every advantage is 0).
        valid_fraction: fraction of samples with a finite reward.
    """

    advantages: torch.Tensor
    zero_std_fraction: float
    valid_fraction: float


def group_advantages(
    rewards: torch.Tensor,
    group: torch.Tensor,
    *,
    std: str = "group",
    clip: float = 5.0,
    eps: float = 1e-4,
) -> GroupAdvantages:
    """Group-relative advantages of ``rewards`` [B] with group ids ``group`` [B]."""
    if std not in STD_MODES:
        raise ValueError(f"group_advantages: std={std!r}, expected one of {STD_MODES}")
    if rewards.shape != group.shape or rewards.ndim != 1:
        raise ValueError(
            f"group_advantages: rewards {tuple(rewards.shape)} and group {tuple(group.shape)} "
            "must be [B]"
        )
    r = rewards.double()
    valid = torch.isfinite(r)
    ids, inv = torch.unique(group, return_inverse=True)
    n_groups = len(ids)
    count = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, inv, valid.double())
    r0 = torch.where(valid, r, 0.0)
    mean = torch.zeros_like(count).index_add_(0, inv, r0) / count.clamp_min(1)
    dev = torch.where(valid, r - mean[inv], 0.0)
    var = torch.zeros_like(count).index_add_(0, inv, dev**2) / count.clamp_min(1)
    group_std = var.sqrt()
    if std == "group":
        scale = group_std[inv]
    else:
        scale = r[valid].std(unbiased=False) if valid.any() else r.new_tensor(0.0)
    denom = scale + eps
    # a constant group teaches nothing
    adv = torch.where(denom > 0, dev / denom, 0.0).clamp(-clip, clip)
    adv = torch.where(valid, adv, 0.0).float()
    zero = ((group_std < 1e-8) & (count > 0)).double().mean().item() if n_groups else 0.0
    return GroupAdvantages(adv, zero, valid.double().mean().item() if len(r) else 0.0)


def term_advantages(
    terms: dict[str, tuple[torch.Tensor, float]],
    group: torch.Tensor,
    *,
    std: str = "group",
    clip: float = 5.0,
    eps: float = 1e-4,
) -> GroupAdvantages:
    """A = clamp(sum_k w_k z_k, -clip, clip), with z_k the unclipped group z-scores of
    term k (``terms``: name -> (rewards [B], weight)). A sample with any NaN term gets 0."""
    if not terms:
        raise ValueError("term_advantages: no reward terms")
    parts = [
        (group_advantages(r, group, std=std, clip=float("inf"), eps=eps), r, w)
        for r, w in terms.values()
    ]
    total = sum(w * a.advantages.double() for a, _, w in parts)
    valid = torch.stack([torch.isfinite(r) for _, r, _ in parts]).all(0)
    adv = torch.where(valid, total.clamp(-clip, clip), 0.0).float()
    _, inv = torch.unique(group, return_inverse=True)
    signal = torch.zeros(int(inv.max()) + 1 if len(inv) else 0).index_add_(0, inv, adv.abs())
    # no term varies in the group
    zero = (signal == 0).double().mean().item() if len(signal) else 0.0
    return GroupAdvantages(adv, zero, valid.double().mean().item())


def group_credit(
    rewards: torch.Tensor,
    group: torch.Tensor,
    terms: dict[str, tuple[torch.Tensor, float]] | None,
    *,
    aggregate: str = "reward",
    std: str = "group",
    clip: float = 5.0,
) -> GroupAdvantages:
    """The algorithms' advantage step: :func:`term_advantages` when ``aggregate`` is
    ``"advantage"`` and there are several terms, else :func:`group_advantages` of the
    summed reward."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"group_credit: aggregate={aggregate!r}, expected one of {AGGREGATES}")
    if aggregate == "advantage" and terms:
        return term_advantages(terms, group, std=std, clip=clip)
    return group_advantages(rewards, group, std=std, clip=clip)


def members(group: torch.Tensor) -> list[int]:
    """Each sample's index within its group (samples of a group are contiguous)."""
    ids = group.tolist()
    return [b - ids.index(g) for b, g in enumerate(ids)]
