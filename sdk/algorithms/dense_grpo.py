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
The paper's second part, a reward-aware per-step noise level, is not implemented
here; the per-step normalisation above is the natural reading of the paper's
description (the exact constant handling is unverified).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from alignflow.sdk.advantages import group_advantages
from alignflow.sdk.algorithms.flow_grpo import FlowGRPO, FlowGRPOConfig, Transitions
from alignflow.sdk.batching import repeat_interleave
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.rollout import Trajectories, rollout, rollout_generators
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


@dataclass
class DenseTrajectories(Trajectories):
    """Trajectories with the peeked values V at the start and the end of each trained
    step: ``values`` [B, K, 2]."""

    values: torch.Tensor | None = None


class DenseGRPO(FlowGRPO):
    name = "dense_grpo"
    Config = DenseGRPOConfig
    scores_peeks = True  # the trainer passes ``score`` (latents -> rewards [B]) to the rollout

    def rollout(self, policy, cond, sigmas, *, guidance: float, group_size: int, seed: int, iteration: int,
                slots: list[int], score) -> DenseTrajectories:
        N, G = len(sigmas) - 1, group_size
        plan = self.plan(N, iteration, seed)
        noise, sde = rollout_generators(seed, iteration, slots, G, shared=self.share_noise)
        traj = rollout(policy, cond, sigmas, plan, self.kernel, noise_level=self.noise_level, guidance=guidance,
                       group_size=G, share_noise=self.share_noise, noise_generators=noise, sde_generators=sde)
        cond = repeat_interleave(cond, G)
        cache: dict[int, torch.Tensor] = {N: score(traj.x0)}  # V at step index -> [B]
        for j, i in enumerate(traj.steps.tolist()):
            for at, x in ((i, traj.x[:, j]), (i + 1, traj.x_next[:, j])):
                if at not in cache:
                    cache[at] = score(self.peek(policy, x, cond, sigmas[at:], guidance))
        values = torch.stack([torch.stack([cache[i], cache[i + 1]], -1) for i in traj.steps.tolist()], 1)
        return DenseTrajectories(**{f.name: getattr(traj, f.name) for f in dataclasses.fields(traj)}, values=values)

    def peek(self, policy, x: torch.Tensor, cond, sigmas: torch.Tensor, guidance: float) -> torch.Tensor:
        """The clean sample the ODE reaches from x at sigmas[0]."""
        if self.cfg.peek_steps:
            steps = min(self.cfg.peek_steps, len(sigmas) - 1)
            return dpm_solver_2m(policy, x, cond, compress(sigmas, steps / (len(sigmas) - 1)), guidance)
        ode = KERNELS["ode"]
        with torch.no_grad():
            for i in range(len(sigmas) - 1):
                v = policy.velocity(x, sigmas[i].to(x.device).expand(x.shape[0]), cond, guidance)
                x = ode(x, v, sigmas, i).prev_sample
        return x

    def training_items(self, traj: DenseTrajectories, advantages: torch.Tensor, *, seed: int = 0,
                       iteration: int = 0, rewards: torch.Tensor | None = None) -> Transitions:
        items = super().training_items(traj, advantages, seed=seed, iteration=iteration, rewards=rewards)
        gains = (traj.values[..., 1] - traj.values[..., 0]).cpu()  # [B, K]
        group = traj.group.cpu()
        per_step = [group_advantages(gains[:, j], group, std=self.cfg.adv_std, clip=self.cfg.adv_clip).advantages
                    for j in range(gains.shape[1])]
        adv = torch.stack(per_step, 1) if per_step else gains
        return dataclasses.replace(items, advantage=adv.flatten().to(items.x.device))
