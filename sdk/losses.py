"""Losses of the ratio-based (Flow-GRPO / DanceGRPO) family.

All inputs are per *transition* (one trained step of one sample), flattened to [E].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_CONVENTIONS = ("reference", "exact")


@dataclass
class PolicyLossOutput:
    """Attributes:
    loss: scalar, mean over the E transitions.
    ratio: [E] detached pi_theta / pi_old.
    clipped: [E] bool, the clipped branch was taken (its gradient is 0).
    approx_kl: scalar, 0.5 * mean((log pi_theta - log pi_old)^2), the usual
        PPO estimate of KL(pi_old || pi_theta)."""

    loss: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor
    approx_kl: torch.Tensor


def clipped_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
    weights: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """PPO's clipped surrogate as Flow-GRPO uses it (arXiv 2505.05470, eq. 8):

        ratio = exp(log_prob - old_log_prob)
        L = mean_E max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))

    ``weights`` [E] (optional) scale each transition's term, e.g. TempFlow-GRPO's
    noise-aware weights; the mean is then a weighted sum divided by E.
    With the per-element mean log-prob convention of the kernels, clip ranges are
    small (1e-4 for flow_sde, 1e-5 for cps).
    """
    if not (log_prob.shape == old_log_prob.shape == advantages.shape):
        raise ValueError(
            f"clipped_policy_loss: shapes differ: log_prob {tuple(log_prob.shape)}, "
            f"old_log_prob {tuple(old_log_prob.shape)}, advantages {tuple(advantages.shape)}"
        )
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    per = torch.maximum(unclipped, clipped)
    if weights is not None:
        per = per * weights
    return PolicyLossOutput(
        loss=per.mean(),
        ratio=ratio.detach(),
        clipped=(clipped > unclipped).detach(),
        approx_kl=0.5 * (log_ratio.detach() ** 2).mean(),
    )


def kl_to_reference(
    mean: torch.Tensor,
    mean_ref: torch.Tensor,
    *,
    std: torch.Tensor,
    diffusion: torch.Tensor,
    convention: str = "reference",
) -> torch.Tensor:
    """KL(pi_theta || pi_ref) of one Gaussian step per transition: [E].

    Both steps share the std, so the exact KL is mean over D of
    (mean - mean_ref)^2 / (2 std^2) (a per-element mean, like the log-probs).

    ``convention="reference"`` (the default; Flow-GRPO's code) divides by 2 g^2
    instead, with g the kernel's diffusion coefficient (``Kernel.diffusion``). For
    ``flow_sde`` and ``dance_sde`` std = g sqrt(|dt|), so this is the exact KL times
    |dt|; for ``cps`` std = g and the two agree. The published beta values (0.04
    GenEval/OCR, 0.01 PickScore) assume the reference convention.

    Args:
        mean, mean_ref: [E, ...] float32 means under the policy and the reference.
        std, diffusion: [E] or broadcastable to [E, 1, ..., 1].
    """
    if convention not in KL_CONVENTIONS:
        raise ValueError(
            f"kl_to_reference: convention={convention!r}, expected one of {KL_CONVENTIONS}"
        )
    scale = (diffusion if convention == "reference" else std).reshape(-1, *([1] * (mean.ndim - 1)))
    return ((mean - mean_ref) ** 2 / (2 * scale**2)).flatten(1).mean(1)
