"""GRPO-Guard (Wang et al., "GRPO-Guard: Mitigating Implicit Over-Optimization in Flow
Matching via Regulated Clipping", arXiv 2510.22319): Flow-GRPO with the importance
ratio re-centred and re-scaled per step before clipping.

Under the flow SDE, log p_theta(x') - log p_old(x') for x' drawn from the old step has
mean -||mu_theta - mu_old||^2 / (2 s^2) (s: the step's noise std), so the ratio sits
below 1 and positive-advantage transitions rarely reach the upper clip; its spread
also changes from step to step with s. RatioNorm:

    b     = mean_D ||mu_theta - mu_old||^2 / (2 s^2)
    ratio = exp((log p_theta - log p_old + b) * s)
    L     = mean over transitions of (1 / |dt|) max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps))

the 1 / |dt| factor equalising the gradient across noise levels. The form follows the
public GRPOGuardLoss (verl-omni); the rest (rollout, advantages, KL) is Flow-GRPO's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignflow.sdk.advantages import GroupAdvantages
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.algorithms.flow_grpo import (
    FlowGRPOConfig,
    Transitions,
    credit,
    ratio_loss,
    sde_rollout,
    transitions,
)
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import StepOutput, get_kernel
from alignflow.sdk.losses import PolicyLossOutput, clipped_policy_loss
from alignflow.sdk.plans import AllSDE, Plan, check_plan
from alignflow.sdk.rollout import Trajectories


@dataclass
class GRPOGuardConfig(FlowGRPOConfig):
    def validate(self) -> None:
        super().validate()
        if self.kernel not in (
            "flow_sde",
            "dance_sde",
        ):  # the bias b assumes a normalised Gaussian log-prob
            raise ConfigError(
                "algorithm.kernel",
                self.kernel,
                "flow_sde or dance_sde (RatioNorm's centring term "
                "assumes their Gaussian log-probs; cps drops the 1 / (2 s^2) scale)",
            )


@dataclass
class GuardTransitions(Transitions):
    """Flow-GRPO's transitions with the rollout policy's step mean [E, ...] (float32)."""

    mean: torch.Tensor | None = None


def ratio_norm_loss(
    out: StepOutput,
    old_log_prob: torch.Tensor,
    items: GuardTransitions,
    clip_range: float,
    on_policy: bool,
) -> PolicyLossOutput:
    """RatioNorm: the log-ratio centred by b and scaled by the step's std, clipped, each
    transition weighted by 1 / |dt|."""
    mu_old = out.mean.detach() if on_policy else items.mean
    s = out.std.flatten()
    bias = (out.mean - mu_old).pow(2).flatten(1).mean(1) / (2 * s**2)
    log_ratio = (out.log_prob - old_log_prob + bias) * s
    sigmas = items.sigmas.to(s.device)
    dt = (sigmas[items.step] - sigmas[items.step + 1]).float()
    return clipped_policy_loss(
        log_ratio, torch.zeros_like(log_ratio), items.advantage, clip_range, weights=1 / dt
    )


class GRPOGuard(Algorithm):
    name = "grpo_guard"
    Config = GRPOGuardConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: GRPOGuardConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.plan: Plan = AllSDE(self.cfg.train_fraction, self.cfg.ode_first)

    @classmethod
    def needs_reference(cls, config: GRPOGuardConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(self, policy, cond, sigmas, **run) -> Trajectories:
        return sde_rollout(
            self.cfg, self.kernel, self.plan, policy, cond, sigmas, share_noise=False, **run
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Trajectories, advantages, **_) -> GuardTransitions:
        return GuardTransitions(**vars(transitions(traj, advantages)), mean=traj.mean.flatten(0, 1))

    def loss(self, policy, items: GuardTransitions, cond, ctx: StepContext) -> LossOutput:
        def surrogate(out, old, items, ctx):
            return ratio_norm_loss(out, old, items, self.cfg.clip_range, ctx.on_policy)

        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx, surrogate)
