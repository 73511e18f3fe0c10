"""DanceGRPO (Xue et al., "DanceGRPO: Unleashing GRPO on Visual Generation",
arXiv 2505.07818).

Rollout: every step draws from the dance SDE (:class:`~alignflow.sdk.kernels.DanceSDE`,
constant noise scale eta = 0.3), and the G samples of a prompt start from the same
initial noise, so that their differences come from the SDE alone. Training: each sample
trains a random subset of floor(0.6 T) of its T recorded steps (all but the last),
drawn per sample. With several reward models the advantages are summed per model:

    A = clamp(sum_k w_k (r_k - mean_group r_k) / std_group r_k, -A_max, A_max)

and the loss is the clipped ratio of Flow-GRPO without a KL term:

    L = mean over the chosen (sample, step) of max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps))

Reference defaults (FLUX, the authors' scripts): 16 steps, eta 0.3, G = 12, fraction
0.6, clip 1e-4, A_max 5, no KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignflow.sdk.advantages import members
from alignflow.sdk.algorithms.flow_grpo import FlowGRPO, FlowGRPOConfig, Transitions
from alignflow.sdk.batching import select
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import generator
from alignflow.sdk.rollout import Trajectories


@dataclass
class DanceGRPOConfig(FlowGRPOConfig):
    kernel: str = "dance_sde"
    noise_level: float = 0.3
    """the dance SDE's constant noise scale eta"""
    step_fraction: float = 0.6
    """each sample trains floor(step_fraction x T) of its T recorded steps, drawn at random"""
    kl_beta: float = 0.0
    aggregate: str = "advantage"

    def validate(self) -> None:
        super().validate()
        if not 0 < self.step_fraction <= 1:
            raise ConfigError("algorithm.step_fraction", self.step_fraction, "a float in (0, 1]")


class DanceGRPO(FlowGRPO):
    name = "dance_grpo"
    Config = DanceGRPOConfig
    share_noise = True

    def training_items(self, traj: Trajectories, advantages: torch.Tensor, *, seed: int = 0,
                       iteration: int = 0, rewards: torch.Tensor | None = None) -> Transitions:
        items = super().training_items(traj, advantages)
        B, K = traj.log_prob.shape
        keep = max(1, int(self.cfg.step_fraction * K))
        groups, member = traj.group.tolist(), members(traj.group)
        chosen = []
        for b in range(B):
            order = torch.randperm(K, generator=generator(seed, "dance_steps", iteration, groups[b], member[b]))
            chosen.append(b * K + order[:keep].sort().values)
        return select(items, torch.cat(chosen).to(items.x.device))
