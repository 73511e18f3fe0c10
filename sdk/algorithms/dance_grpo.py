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

from alignflow.sdk.advantages import GroupAdvantages, members
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.algorithms.flow_grpo import (
    FlowGRPOConfig,
    Transitions,
    credit,
    ratio_loss,
    sde_rollout,
    transitions,
)
from alignflow.sdk.batching import select
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import get_kernel
from alignflow.sdk.plans import AllSDE, Plan, check_plan
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


def random_steps(
    items: Transitions, traj: Trajectories, fraction: float, *, seed: int, iteration: int
) -> Transitions:
    """floor(fraction x K) of each sample's K transitions, drawn per (slot, member)."""
    B, K = traj.log_prob.shape
    keep = max(1, int(fraction * K))
    groups, member = traj.group.tolist(), members(traj.group)
    chosen = []
    for b in range(B):
        order = torch.randperm(
            K, generator=generator(seed, "dance_steps", iteration, groups[b], member[b])
        )
        chosen.append(b * K + order[:keep].sort().values)
    return select(items, torch.cat(chosen).to(items.x.device))


class DanceGRPO(Algorithm):
    name = "dance_grpo"
    Config = DanceGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: DanceGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.plan: Plan = AllSDE(self.cfg.train_fraction, self.cfg.ode_first)

    @classmethod
    def needs_reference(cls, config: DanceGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(self, policy, cond, sigmas, **run) -> Trajectories:
        # one initial noise per group: the members differ by the SDE alone
        return sde_rollout(
            self.cfg, self.kernel, self.plan, policy, cond, sigmas, share_noise=True, **run
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(
        self, traj: Trajectories, advantages, *, seed: int, iteration: int, **_
    ) -> Transitions:
        return random_steps(
            transitions(traj, advantages),
            traj,
            self.cfg.step_fraction,
            seed=seed,
            iteration=iteration,
        )

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)
