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

from alignflow.sdk.algorithms.base import StepContext
from alignflow.sdk.algorithms.flow_grpo import FlowGRPO, FlowGRPOConfig, Transitions
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.losses import clipped_policy_loss
from alignflow.sdk.rollout import Trajectories


@dataclass
class GRPOGuardConfig(FlowGRPOConfig):
    def validate(self) -> None:
        super().validate()
        if self.kernel not in ("flow_sde", "dance_sde"):  # the bias b assumes a normalised Gaussian log-prob
            raise ConfigError("algorithm.kernel", self.kernel, "flow_sde or dance_sde (RatioNorm's centring term "
                              "assumes their Gaussian log-probs; cps drops the 1 / (2 s^2) scale)")


@dataclass
class GuardTransitions(Transitions):
    """Flow-GRPO's transitions with the rollout policy's step mean [E, ...] (float32)."""

    mean: torch.Tensor | None = None


class GRPOGuard(FlowGRPO):
    name = "grpo_guard"
    Config = GRPOGuardConfig

    def training_items(self, traj: Trajectories, advantages: torch.Tensor, *, seed: int = 0,
                       iteration: int = 0, rewards: torch.Tensor | None = None) -> GuardTransitions:
        base = super().training_items(traj, advantages)
        return GuardTransitions(**vars(base), mean=traj.mean.flatten(0, 1))

    def policy_loss(self, out, old_log_prob: torch.Tensor, items: GuardTransitions, ctx: StepContext):
        mu_old = out.mean.detach() if ctx.on_policy else items.mean
        s = out.std.flatten()
        bias = (out.mean - mu_old).pow(2).flatten(1).mean(1) / (2 * s**2)
        log_ratio = (out.log_prob - old_log_prob + bias) * s
        sigmas = items.sigmas.to(s.device)
        dt = (sigmas[items.step] - sigmas[items.step + 1]).float()
        return clipped_policy_loss(log_ratio, torch.zeros_like(log_ratio), items.advantage, self.cfg.clip_range,
                                   weights=1 / dt)
