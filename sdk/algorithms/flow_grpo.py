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

from dataclasses import dataclass, field

import torch

from alignflow.sdk.advantages import AGGREGATES, STD_MODES, GroupAdvantages, group_credit
from alignflow.sdk.algorithms.base import LossOutput, StepContext, algorithm_config
from alignflow.sdk.batching import SHARED
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import KERNELS, get_kernel
from alignflow.sdk.losses import KL_CONVENTIONS, clipped_policy_loss, kl_to_reference
from alignflow.sdk.plans import AllSDE, Plan, SDEWindow, StepPlan
from alignflow.sdk.rollout import Trajectories


@dataclass
class FlowGRPOConfig:
    kernel: str = "flow_sde"
    """SDE kernel of the rollout: flow_sde, dance_sde or cps"""
    noise_level: float = 0.7
    """the kernel's noise level a (0.7 SD3.5, 0.9 FLUX; cps ~0.8)"""
    train_fraction: float = 0.99
    """train the first floor(train_fraction * N) steps"""
    ode_first: int = 0
    """the first K steps are deterministic and untrained (sway-type schedules, see docs/speech.md)"""
    clip_range: float = 1e-4
    """PPO clip eps on the ratio (1e-4 for flow_sde's mean log-prob convention)"""
    adv_clip: float = 5.0
    """advantages are clamped to [-adv_clip, adv_clip]"""
    adv_std: str = "group"
    """z-score with the group's own std ('group') or the iteration's ('global')"""
    aggregate: str = "reward"
    """several reward terms: z-score their weighted sum ('reward') or sum their weighted z-scores ('advantage')"""
    kl_beta: float = 0.04
    """weight of the KL to the reference (0 = no KL, no reference forward)"""
    kl_convention: str = "reference"
    """'reference' (divide by 2 g^2, Flow-GRPO's code) or 'exact' (2 std^2)"""

    def validate(self) -> None:
        stochastic = [k for k, v in KERNELS.items() if v.stochastic]
        checks = [
            ("kernel", self.kernel in stochastic, f"one of {stochastic}"),
            ("noise_level", self.noise_level > 0, "a float > 0 (0 makes the SDE deterministic: nothing to train)"),
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


class FlowGRPO:
    name = "flow_grpo"
    Config = FlowGRPOConfig
    share_noise = False
    minmax_stats = ("ratio",)

    def __init__(self, config: FlowGRPOConfig | None = None):
        self.cfg = config or self.Config()
        self.cfg.validate()
        self.kernel = get_kernel(self.cfg.kernel)
        self.noise_level = self.cfg.noise_level
        self.needs_reference = self.cfg.kl_beta > 0
        self._plan: Plan = self.make_plan()

    @classmethod
    def config_from(cls, args: dict) -> FlowGRPOConfig:
        return algorithm_config(cls, args)

    def make_plan(self) -> Plan:
        return AllSDE(self.cfg.train_fraction, self.cfg.ode_first)

    def plan(self, num_steps: int, iteration: int, seed: int) -> StepPlan:
        return self._plan(num_steps, iteration, seed)

    def advantages(self, rewards: torch.Tensor, group: torch.Tensor,
                   terms: dict[str, tuple[torch.Tensor, float]] | None = None) -> GroupAdvantages:
        return group_credit(rewards, group, terms, aggregate=self.cfg.aggregate, std=self.cfg.adv_std,
                            clip=self.cfg.adv_clip)

    def training_items(self, traj: Trajectories, advantages: torch.Tensor, *, seed: int = 0,
                       iteration: int = 0, rewards: torch.Tensor | None = None) -> Transitions:
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

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        cfg, sigmas = self.cfg, items.sigmas
        step_args = dict(noise_level=cfg.noise_level, prev_sample=items.x_next)
        v = policy.velocity(items.x, sigmas[items.step].to(items.x.device), cond, ctx.guidance)
        out = self.kernel(items.x, v, sigmas, items.step, **step_args)
        # On-policy, the stored rollout log-prob and this one differ only by numerics
        # (batch composition, kernels); using this one makes the first ratio exactly 1
        # and the mismatch is reported so that a real discrepancy cannot hide.
        old = out.log_prob.detach() if ctx.on_policy else items.log_prob
        pg = self.policy_loss(out, old, items, ctx)
        stats = {"ratio": pg.ratio, "clipfrac": pg.clipped.float(), "approx_kl": pg.approx_kl.expand(len(old)),
                 "policy_loss": pg.loss.detach().expand(len(old))}
        if ctx.on_policy:
            stats["logprob_mismatch"] = (out.log_prob.detach() - items.log_prob).abs()
        loss = pg.loss
        if self.needs_reference:
            with torch.no_grad(), ctx.reference():
                v_ref = policy.velocity(items.x, sigmas[items.step].to(items.x.device), cond, ctx.guidance)
                ref = self.kernel(items.x, v_ref, sigmas, items.step, **step_args)
            g = self.kernel.diffusion(sigmas, items.step, items.x, cfg.noise_level)
            kl = kl_to_reference(out.mean, ref.mean, std=out.std, diffusion=g, convention=cfg.kl_convention)
            loss = loss + cfg.kl_beta * kl.mean()
            stats["kl_ref"] = kl.detach()
        return LossOutput(loss, stats)


    def policy_loss(self, out, old_log_prob: torch.Tensor, items: Transitions, ctx: StepContext):
        """The clipped surrogate on the step's log-ratio (variants override this)."""
        return clipped_policy_loss(out.log_prob, old_log_prob, items.advantage, self.cfg.clip_range,
                                   weights=items.weight)


class FlowGRPOFast(FlowGRPO):
    name = "flow_grpo_fast"
    Config = FlowGRPOFastConfig
    share_noise = True

    def make_plan(self) -> Plan:
        return SDEWindow(self.cfg.window, None if self.cfg.max_start < 0 else self.cfg.max_start, self.cfg.ode_first)
