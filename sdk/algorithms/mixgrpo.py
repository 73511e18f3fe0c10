"""MixGRPO (Li et al., "MixGRPO: Unlocking Flow-based GRPO Efficiency with Mixed
ODE-SDE", arXiv 2507.21802).

Only a window of w steps is stochastic and trained; before and after it the sampler is
the ODE. The window slides with training (:class:`~alignflow.sdk.plans.SlidingWindow`):
it starts at step 0 (high noise, where the layout is decided) and moves one step every
``every`` iterations, rolling back to the start at the end. The loss on a window step
is Flow-GRPO's (:class:`~alignflow.sdk.algorithms.flow_grpo.FlowGRPO`):

    ratio = exp(log p_theta(x_{t+1} | x_t) - log p_old(x_{t+1} | x_t)),  t in window
    L = mean max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps))

so the cost of an iteration is w trained steps instead of ~N, and the ODE prefix before
the window is computed once per prompt (the group shares its initial noise).
Reference defaults (FLUX, the authors' scripts): N = 25, noise 0.7 (flow_sde), w = 4,
shift every 25 iterations by 1, roll back, clip 1e-4, no KL, G = 12, per-reward
advantages summed.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from alignflow.sdk.kernels import get_kernel
from alignflow.sdk.plans import SLIDE_MODES, Plan, SlidingWindow, check_plan
from alignflow.sdk.rollout import Trajectories


@dataclass
class MixGRPOConfig(FlowGRPOConfig):
    kl_beta: float = 0.0
    """the reference runs without KL"""
    aggregate: str = "advantage"
    """per-reward z-scores summed (the reference's advantage_aggr)"""
    window: int = 4
    """SDE (and trained) steps per rollout"""
    every: int = 25
    """iterations before the window moves"""
    stride: int = 1
    """steps the window moves each time"""
    slide: str = "progressive"
    """progressive (move, then roll back or stop), frozen (stay at start), random (per iteration)"""
    roll_back: bool = True
    """past max_start, start again at ode_first"""
    max_start: int = -1
    """latest window start; -1 = N - 1 - window"""

    def validate(self) -> None:
        super().validate()
        for name, ok, accepted in (
            ("window", self.window >= 1, "an int >= 1"),
            ("every", self.every >= 1, "an int >= 1"),
            ("stride", self.stride >= 1, "an int >= 1"),
            ("slide", self.slide in SLIDE_MODES, f"one of {SLIDE_MODES}"),
        ):
            if not ok:
                raise ConfigError(f"algorithm.{name}", getattr(self, name), accepted)


def sliding_window(c: MixGRPOConfig) -> SlidingWindow:
    return SlidingWindow(
        c.window,
        c.every,
        c.stride,
        c.slide,
        c.roll_back,
        start=c.ode_first,
        max_start=None if c.max_start < 0 else c.max_start,
    )


class MixGRPO(Algorithm):
    name = "mixgrpo"
    Config = MixGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: MixGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.plan: Plan = sliding_window(self.cfg)

    @classmethod
    def needs_reference(cls, config: MixGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(self, policy, cond, sigmas, **run) -> Trajectories:
        # the group shares its initial noise: the ODE prefix before the window runs once per prompt
        return sde_rollout(
            self.cfg, self.kernel, self.plan, policy, cond, sigmas, share_noise=True, **run
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Trajectories, advantages, **_) -> Transitions:
        return transitions(traj, advantages)

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)
