"""DenseGRPO (Deng et al., "DenseGRPO: From Sparse to Dense Reward for Flow Matching
Model Alignment", arXiv 2601.20218).

Flow-GRPO gives every step of a trajectory the same advantage, the terminal reward's.
DenseGRPO credits each step with its own reward gain. A deterministic *peek* takes the
state x_i to a clean sample with the ODE, peek(x_i) = ODE_{s_i -> 0}(x_i), and the
reward model scores it:

    V_i  = R(peek(x_i))                  (V_N = R(x_N), the terminal reward)
    g_i  = V_{i+1} - V_i                 the gain of step i (x_i -> x_{i+1})
    A_i  = clamp((g_i - mean_group g_i) / (std_group g_i + eps), -A_max, A_max)

normalised per step within the prompt's group, and the loss on step i is Flow-GRPO's
clipped ratio with A_i. Peeks cost one ODE solve per trained step: Euler over the
remaining schedule (``peek_steps: 0``) or DPM-Solver++(2M) over ``peek_steps`` steps.
The rollout returns the peeked latents (``peeks``); the trainer scores them with the
final samples and hands the rewards back to ``training_items``.
The paper's second part, a reward-aware per-step noise level, is not implemented
here; the per-step normalisation above is the natural reading of the paper's
description (the exact constant handling is unverified).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from alignflow.sdk.advantages import GroupAdvantages, group_advantages
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.algorithms.flow_grpo import (
    FlowGRPOConfig,
    Transitions,
    credit,
    ratio_loss,
    sde_rollout,
    transitions,
)
from alignflow.sdk.batching import repeat_interleave
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import KERNELS, get_kernel
from alignflow.sdk.plans import AllSDE, Plan, check_plan
from alignflow.sdk.rollout import Trajectories
from alignflow.sdk.solvers import compress, dpm_solver_2m


@dataclass
class DenseGRPOConfig(FlowGRPOConfig):
    train_fraction: float = 0.6
    """trained (and peeked) steps: the first floor(0.6 N); later steps gain little"""
    peek_steps: int = 0
    """ODE steps of a peek: 0 = Euler over the remaining schedule, else DPM-Solver++(2M) steps"""

    def validate(self) -> None:
        super().validate()
        if self.peek_steps < 0:
            raise ConfigError("algorithm.peek_steps", self.peek_steps, "an int >= 0")


def peeked_steps(steps: list[int], num_steps: int) -> list[int]:
    """The step indices whose value a peek measures: the start and end of every trained
    step, except N (the final sample's own reward)."""
    return sorted({at for i in steps for at in (i, i + 1)} - {num_steps})


class DenseGRPO(Algorithm):
    name = "dense_grpo"
    Config = DenseGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: DenseGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.plan: Plan = AllSDE(self.cfg.train_fraction, self.cfg.ode_first)

    @classmethod
    def needs_reference(cls, config: DenseGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(
        self, policy, cond, sigmas, *, guidance: float, group_size: int, **run
    ) -> Trajectories:
        """Flow-GRPO's rollout, with ``peeks`` [B, M, ...]: the clean sample the ODE
        reaches from each state of :func:`peeked_steps` (M of them)."""
        traj = sde_rollout(
            self.cfg,
            self.kernel,
            self.plan,
            policy,
            cond,
            sigmas,
            guidance=guidance,
            group_size=group_size,
            share_noise=False,
            **run,
        )
        cond = repeat_interleave(cond, group_size)
        states = {}  # step index -> x at that step, [B, ...]
        for j, i in enumerate(traj.steps.tolist()):
            states.setdefault(i, traj.x[:, j])
            states.setdefault(i + 1, traj.x_next[:, j])
        at = peeked_steps(traj.steps.tolist(), len(sigmas) - 1)
        peeks = [self.peek(policy, states[i], cond, sigmas[i:], guidance) for i in at]
        return dataclasses.replace(traj, peeks=torch.stack(peeks, 1) if peeks else None)

    def peek(
        self, policy, x: torch.Tensor, cond, sigmas: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        """The clean sample the ODE reaches from x at sigmas[0]."""
        if self.cfg.peek_steps:
            steps = min(self.cfg.peek_steps, len(sigmas) - 1)
            return dpm_solver_2m(
                policy, x, cond, compress(sigmas, steps / (len(sigmas) - 1)), guidance
            )
        ode = KERNELS["ode"]
        with torch.no_grad():
            for i in range(len(sigmas) - 1):
                v = policy.velocity(x, sigmas[i].to(x.device).expand(x.shape[0]), cond, guidance)
                x = ode(x, v, sigmas, i).x_next
        return x

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)  # logged only: each step gets its own below

    def training_items(
        self,
        traj: Trajectories,
        advantages,
        *,
        rewards: torch.Tensor,
        peek_rewards: torch.Tensor | None,
        **_,
    ) -> Transitions:
        steps, N = traj.steps.tolist(), len(traj.sigmas) - 1
        column = {i: m for m, i in enumerate(peeked_steps(steps, N))}
        value = {i: peek_rewards[:, m] for i, m in column.items()} | {
            N: rewards
        }  # V at step index -> [B]
        gains = (
            torch.stack([value[i + 1] - value[i] for i in steps], 1).cpu()
            if steps
            else torch.zeros(len(rewards), 0)
        )
        group = traj.group.cpu()
        per_step = [
            group_advantages(
                gains[:, j], group, std=self.cfg.adv_std, clip=self.cfg.adv_clip
            ).advantages
            for j in range(gains.shape[1])
        ]
        adv = torch.stack(per_step, 1) if per_step else gains
        return dataclasses.replace(
            transitions(traj, advantages), advantage=adv.flatten().to(traj.x.device)
        )

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)
