"""Flow-GRPO (Liu et al., "Flow-GRPO: Training Flow Matching Models via Online RL",
arXiv 2505.05470) and Flow-GRPO-Fast.

Rollout: the SDE of :class:`~alignflow.sdk.kernels.FlowSDE` at every step; the first
floor(0.99 N) steps are trained. For each prompt, G samples; advantages are z-scores
within the group (:func:`~alignflow.sdk.advantages.group_advantages`). Loss per
trained transition (x_t -> x_{t+1}):

    ratio = exp(log p_theta(x_{t+1} | x_t) - log p_old(x_{t+1} | x_t))
    L = mean max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) + beta KL(p_theta || p_ref)

with the KL in the reference convention (see :func:`~alignflow.sdk.losses.kl_to_reference`).
Paper defaults: noise level 0.7 (SD3.5), clip 1e-4, beta 0.04 (GenEval/OCR) or 0.01
(PickScore), group size 24, 10 rollout steps.

Flow-GRPO-Fast (same paper's repository): ODE up to a random step k, an SDE window
of 1-3 steps, ODE after; only the window is trained, and the deterministic prefix is
computed once per prompt (the group shares its initial noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alignflow.sdk.advantages import AGGREGATES, STD_MODES, GroupAdvantages, group_credit
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.batching import SHARED
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import KERNELS, StepOutput, get_kernel
from alignflow.sdk.losses import (
    KL_CONVENTIONS,
    PolicyLossOutput,
    clipped_policy_loss,
    kl_to_reference,
)
from alignflow.sdk.plans import AllSDE, Plan, SDEWindow, check_plan
from alignflow.sdk.rollout import Trajectories, seeded_rollout


@dataclass
class FlowGRPOConfig:
    kernel: str = "flow_sde"
    """SDE kernel of the rollout: flow_sde, dance_sde or cps"""
    noise_level: float = 0.7
    """the kernel's noise level a (0.7 SD3.5, 0.9 FLUX; cps ~0.8)"""
    train_fraction: float = 0.99
    """train the first floor(train_fraction * N) steps"""
    ode_first: int = 0
    """the first K steps are deterministic and untrained (sway-type schedules, see
    docs/speech.md)"""
    clip_range: float = 1e-4
    """PPO clip eps on the ratio (1e-4 for flow_sde's mean log-prob convention)"""
    adv_clip: float = 5.0
    """advantages are clamped to [-adv_clip, adv_clip]"""
    adv_std: str = "group"
    """z-score with the group's own std ('group') or the iteration's ('global')"""
    aggregate: str = "reward"
    """several reward terms: z-score their weighted sum ('reward') or sum their weighted
    z-scores ('advantage')"""
    kl_beta: float = 0.04
    """weight of the KL to the reference (0 = no KL, no reference forward)"""
    kl_convention: str = "reference"
    """'reference' (divide by 2 g^2, Flow-GRPO's code) or 'exact' (2 std^2)"""

    def validate(self) -> None:
        stochastic = [k for k, v in KERNELS.items() if v.stochastic]
        checks = [
            ("kernel", self.kernel in stochastic, f"one of {stochastic}"),
            (
                "noise_level",
                self.noise_level > 0,
                "a float > 0 (0 makes the SDE deterministic: nothing to train)",
            ),
            ("train_fraction", 0 < self.train_fraction <= 1, "a float in (0, 1]"),
            ("ode_first", self.ode_first >= 0, "an int >= 0"),
            ("clip_range", self.clip_range > 0, "a float > 0"),
            ("adv_clip", self.adv_clip > 0, "a float > 0"),
            ("adv_std", self.adv_std in STD_MODES, f"one of {STD_MODES}"),
            ("aggregate", self.aggregate in AGGREGATES, f"one of {AGGREGATES}"),
            ("kl_beta", self.kl_beta >= 0, "a float >= 0"),
            ("kl_convention", self.kl_convention in KL_CONVENTIONS, f"one of {KL_CONVENTIONS}"),
        ]
        for name, ok, accepted in checks:
            if not ok:
                raise ConfigError(f"algorithm.{name}", getattr(self, name), accepted)


@dataclass
class FlowGRPOFastConfig(FlowGRPOConfig):
    clip_range: float = 1e-5
    """the Fast variant trains few steps with a tighter clip"""
    window: int = 2
    """SDE (and trained) steps per rollout"""
    max_start: int = -1
    """latest window start; -1 = N // 2 - window"""

    def validate(self) -> None:
        super().validate()
        if self.window < 1:
            raise ConfigError("algorithm.window", self.window, "an int >= 1")


def credit(
    cfg: Any,
    rewards: torch.Tensor,
    group: torch.Tensor,
    terms: dict[str, tuple[torch.Tensor, float]] | None,
) -> GroupAdvantages:
    """Group-relative advantages with a config's ``aggregate``, ``adv_std`` and
    ``adv_clip`` (every recipe of the family names them so)."""
    return group_credit(
        rewards, group, terms, aggregate=cfg.aggregate, std=cfg.adv_std, clip=cfg.adv_clip
    )


@dataclass
class Transitions:
    """E = B * K trained transitions, flattened sample-major.

    Attributes:
        x, x_next: [E, ...] the step's start and the drawn sample.
        log_prob: [E] rollout log-prob of x_next.
        step: [E] long step index i; sample: [E] long rollout sample index.
        advantage: [E] the sample's advantage.
        sigmas: [N+1] the schedule (shared).
        weight: [E] optional per-transition loss weight (TempFlow-GRPO's noise-aware weights).
    """

    x: torch.Tensor
    x_next: torch.Tensor
    log_prob: torch.Tensor
    step: torch.Tensor
    sample: torch.Tensor
    advantage: torch.Tensor
    sigmas: torch.Tensor = field(metadata=SHARED)
    weight: torch.Tensor | None = None


def transitions(traj: Trajectories, advantages: torch.Tensor) -> Transitions:
    """Every recorded step of every sample, each with its sample's advantage."""
    B, K = traj.log_prob.shape
    return Transitions(
        x=traj.x.flatten(0, 1),
        x_next=traj.x_next.flatten(0, 1),
        log_prob=traj.log_prob.flatten(),
        step=traj.steps.repeat(B),
        sample=torch.arange(B, device=traj.x.device).repeat_interleave(K),
        advantage=advantages.to(traj.x.device).repeat_interleave(K),
        sigmas=traj.sigmas,
    )


Surrogate = Callable[[StepOutput, torch.Tensor, Transitions, StepContext], PolicyLossOutput]
"""(the policy's step output, the old log-prob [E], the items, ctx) -> the policy loss."""


def ratio_loss(
    cfg: FlowGRPOConfig,
    kernel,
    policy,
    items: Transitions,
    cond,
    ctx: StepContext,
    surrogate: Surrogate | None = None,
) -> LossOutput:
    """Flow-GRPO's loss on transitions: the policy's log-prob of each stored step, a
    policy-gradient surrogate on its ratio to the rollout's (PPO's clip by default), and
    ``kl_beta`` times the KL of the step's Gaussian to the reference's."""
    sigmas = items.sigmas
    step_args = dict(noise_level=cfg.noise_level, x_next=items.x_next)
    v = policy.velocity(items.x, sigmas[items.step].to(items.x.device), cond, ctx.guidance)
    out = kernel(items.x, v, sigmas, items.step, **step_args)
    # On-policy, the stored rollout log-prob and this one differ only by numerics
    # (batch composition, kernels); using this one makes the first ratio exactly 1
    # and the mismatch is reported so that a real discrepancy cannot hide.
    old = out.log_prob.detach() if ctx.on_policy else items.log_prob
    if surrogate is None:
        pg = clipped_policy_loss(
            out.log_prob, old, items.advantage, cfg.clip_range, weights=items.weight
        )
    else:
        pg = surrogate(out, old, items, ctx)
    stats = {
        "ratio": pg.ratio,
        "clipfrac": pg.clipped.float(),
        "approx_kl": pg.approx_kl.expand(len(old)),
        "policy_loss": pg.loss.detach().expand(len(old)),
    }
    if ctx.on_policy:
        stats["logprob_mismatch"] = (out.log_prob.detach() - items.log_prob).abs()
    loss = pg.loss
    if cfg.kl_beta > 0:
        with torch.no_grad(), ctx.reference():
            v_ref = policy.velocity(
                items.x, sigmas[items.step].to(items.x.device), cond, ctx.guidance
            )
            ref = kernel(items.x, v_ref, sigmas, items.step, **step_args)
        g = kernel.diffusion(sigmas, items.step, items.x, cfg.noise_level)
        kl = kl_to_reference(
            out.mean, ref.mean, std=out.std, diffusion=g, convention=cfg.kl_convention
        )
        loss = loss + cfg.kl_beta * kl.mean()
        stats["kl_ref"] = kl.detach()
    return LossOutput(loss, stats)


def sde_rollout(
    cfg: FlowGRPOConfig,
    kernel,
    plan: Plan,
    policy,
    cond,
    sigmas: torch.Tensor,
    *,
    guidance: float,
    group_size: int,
    seed: int,
    iteration: int,
    slots: list[int],
    share_noise: bool,
) -> Trajectories:
    """The rollout of this iteration's plan with the recipe's kernel and noise level."""
    return seeded_rollout(
        policy,
        cond,
        sigmas,
        plan(len(sigmas) - 1, iteration, seed),
        kernel,
        noise_level=cfg.noise_level,
        guidance=guidance,
        group_size=group_size,
        seed=seed,
        iteration=iteration,
        slots=slots,
        share_noise=share_noise,
    )


class FlowGRPO(Algorithm):
    """Every step SDE, the first floor(0.99 N) trained, independent initial noise."""

    name = "flow_grpo"
    Config = FlowGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: FlowGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.plan: Plan = AllSDE(self.cfg.train_fraction, self.cfg.ode_first)

    @classmethod
    def needs_reference(cls, config: FlowGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(self, policy, cond, sigmas, **run) -> Trajectories:
        return sde_rollout(
            self.cfg, self.kernel, self.plan, policy, cond, sigmas, share_noise=False, **run
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Trajectories, advantages, **_) -> Transitions:
        return transitions(traj, advantages)

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)


class FlowGRPOFast(Algorithm):
    """A random SDE window of ``window`` trained steps after an ODE prefix that the
    group shares (so the group shares its initial noise), ODE after."""

    name = "flow_grpo_fast"
    Config = FlowGRPOFastConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: FlowGRPOFastConfig | None = None, params=()):
        super().__init__(config, params)
        c = self.cfg
        self.kernel, self.noise_level = get_kernel(c.kernel), c.noise_level
        self.plan: Plan = SDEWindow(c.window, None if c.max_start < 0 else c.max_start, c.ode_first)

    @classmethod
    def needs_reference(cls, config: FlowGRPOFastConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(self, policy, cond, sigmas, **run) -> Trajectories:
        return sde_rollout(
            self.cfg, self.kernel, self.plan, policy, cond, sigmas, share_noise=True, **run
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Trajectories, advantages, **_) -> Transitions:
        return transitions(traj, advantages)

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)
