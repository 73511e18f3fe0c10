"""DiffusionNFT (Zheng et al., "DiffusionNFT: Online Diffusion Reinforcement with
Forward Process", arXiv 2509.16117).

No SDE and no log-probs: rollouts are plain ODE samples (CFG-free), and only the clean
samples x0 and their rewards are kept. The policy is trained on the forward process,
with an implicit positive and negative policy built from the current velocity v_theta
and an "old" one v_old, an EMA of theta whose decay ramps up during training:

    r   = clip(A / (2 A_max) + 1/2, 0, 1)          (A: group advantage, clipped to A_max)
    x_t = (1 - t) x0 + t eps,  t from the rollout's own schedule, eps fresh
    v+  = beta v_theta + (1 - beta) v_old           v- = (1 + beta) v_old - beta v_theta
    x0+ = x_t - t v+                                x0- = x_t - t v-
    L   = A_max / beta * mean[ r ||x0+ - x0||^2 / w+ + (1 - r) ||x0- - x0||^2 / w- ]
          + beta_KL mean ||v_theta - v_ref||^2

with the adaptive weights w = mean |x0_hat - x0| per sample (no gradient) of the
reference code. After each iteration: old <- d old + (1 - d) theta with
d = min(rate x max(0, step - delay), max_decay), step counting optimizer steps.
Reference defaults (SD3.5-M, the authors' code): 10 rollout steps, guidance 1, G = 24,
beta 1 (0.1 for OCR), 9 trained timesteps per sample, beta_KL 1e-4, rate 1e-3 up to
0.5 (OCR: delay 75, rate 7.5e-3 up to 0.999), lr 3e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignflow.sdk.advantages import AGGREGATES, STD_MODES, GroupAdvantages, members
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.algorithms.flow_grpo import credit
from alignflow.sdk.ema import EMA
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.plans import StepPlan
from alignflow.sdk.random import generator, randn
from alignflow.sdk.rollout import Trajectories, seeded_rollout


@dataclass
class DiffusionNFTConfig:
    beta: float = 1.0
    """strength of the implicit positive / negative policies (0.1 for OCR and multi-reward)"""
    timestep_fraction: float = 0.99
    """each sample is trained at floor(fraction x N) of the rollout's N sigmas, drawn per sample"""
    adv_clip: float = 5.0
    """A_max: advantages are clipped to [-A_max, A_max] and mapped to r in [0, 1]"""
    adv_std: str = "global"
    """z-score with the iteration's std ('global', the reference) or the group's"""
    aggregate: str = "reward"
    """several reward terms: z-score the weighted sum ('reward') or sum weighted z-scores
    ('advantage')"""
    kl_beta: float = 1e-4
    """weight of mean ||v_theta - v_ref||^2 (0 = no reference forward)"""
    old_decay_rate: float = 1e-3
    """the old policy's decay grows by this per optimizer step ..."""
    old_decay_max: float = 0.5
    """... up to this"""
    old_decay_delay: int = 0
    """... after this many optimizer steps (before: the old policy is the current one)"""
    adaptive_weight: bool = True
    """divide each sample's squared error by its mean absolute error (the reference's weighting)"""

    def validate(self) -> None:
        for name, ok, accepted in (
            ("beta", self.beta > 0, "a float > 0"),
            ("timestep_fraction", 0 < self.timestep_fraction <= 1, "a float in (0, 1]"),
            ("adv_clip", self.adv_clip > 0, "a float > 0"),
            ("adv_std", self.adv_std in STD_MODES, f"one of {STD_MODES}"),
            ("aggregate", self.aggregate in AGGREGATES, f"one of {AGGREGATES}"),
            ("kl_beta", self.kl_beta >= 0, "a float >= 0"),
            ("old_decay_rate", self.old_decay_rate >= 0, "a float >= 0"),
            ("old_decay_max", 0 <= self.old_decay_max < 1, "a float in [0, 1)"),
            ("old_decay_delay", self.old_decay_delay >= 0, "an int >= 0"),
        ):
            if not ok:
                raise ConfigError(f"algorithm.{name}", getattr(self, name), accepted)

    def old_decay(self, step: int) -> float:
        if step < self.old_decay_delay:
            return 0.0
        return min((step - self.old_decay_delay) * self.old_decay_rate, self.old_decay_max)


@dataclass
class CleanSamples:
    """E = B x K forward-process items, sample-major.

    Attributes:
        x0: [E, ...] the clean rollout sample; eps: [E, ...] fresh noise.
        step: [E] long index i of the item's noise level in the rollout's schedule.
        sigma: [E] float32 noise level t = sigmas[i] of the item.
        r: [E] float32 optimality weight in [0, 1].
        sample: [E] long rollout sample index.
    """

    x0: torch.Tensor
    eps: torch.Tensor
    step: torch.Tensor
    sigma: torch.Tensor
    r: torch.Tensor
    sample: torch.Tensor


class DiffusionNFT(Algorithm):
    name = "diffusion_nft"
    Config = DiffusionNFTConfig

    def __init__(
        self, config: DiffusionNFTConfig | None = None, params: list[torch.nn.Parameter] = ()
    ):
        """``params``: the trained parameters (LoRA or full); the old policy starts as them."""
        super().__init__(config, params)
        self.kernel, self.noise_level = KERNELS["ode"], 0.0  # ODE rollouts: no SDE, no log-probs
        self.old = EMA(list(params), decay=0.0)
        self.optimizer_steps = 0

    @classmethod
    def needs_reference(cls, config: DiffusionNFTConfig) -> bool:
        return config.kl_beta > 0

    def rollout(self, policy, cond, sigmas, *, group_size: int, **run) -> Trajectories:
        return seeded_rollout(
            policy,
            cond,
            sigmas,
            StepPlan.deterministic(len(sigmas) - 1),
            self.kernel,
            noise_level=0.0,
            group_size=group_size,
            share_noise=False,
            **run,
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(
        self, traj: Trajectories, advantages: torch.Tensor, *, seed: int, iteration: int, **_
    ) -> CleanSamples:
        B, N = len(traj.x0), len(traj.sigmas) - 1
        K = max(1, int(self.cfg.timestep_fraction * N))
        groups, member = traj.group.tolist(), members(traj.group)
        steps, rows, eps = [], [], []
        for b in range(B):
            g = generator(seed, "nft", iteration, groups[b], member[b])
            steps.append(torch.randperm(N, generator=g)[:K])
            eps.append(randn((K, *traj.x0.shape[1:]), g, device=traj.x0.device))
            rows.append(torch.full((K,), b, dtype=torch.long))
        A = advantages.to(traj.x0.device).clamp(-self.cfg.adv_clip, self.cfg.adv_clip)
        sample, step = torch.cat(rows).to(traj.x0.device), torch.cat(steps)
        return CleanSamples(
            x0=traj.x0[sample],
            eps=torch.cat(eps).to(traj.x0.dtype),
            step=step.to(traj.x0.device),
            sigma=traj.sigmas[step.to(traj.sigmas.device)].float().to(traj.x0.device),
            r=(A / (2 * self.cfg.adv_clip) + 0.5).clamp(0, 1)[sample],
            sample=sample,
        )

    def loss(self, policy, items: CleanSamples, cond, ctx: StepContext) -> LossOutput:
        cfg = self.cfg
        x0 = items.x0.float()
        t = items.sigma.view(-1, *([1] * (x0.ndim - 1)))
        x_t = ((1 - t) * x0 + t * items.eps.float()).to(items.x0.dtype)
        # CFG-free: the conditional velocity itself is trained (guidance 1). The old
        # policy's forward comes first: swapping its weights in after the trained forward
        # would change tensors that backward still needs.
        with torch.no_grad(), self.old.applied():
            v_old = policy.velocity(x_t, items.sigma, cond, 1.0).float()
        v = policy.velocity(x_t, items.sigma, cond, 1.0).float()
        v_pos = cfg.beta * v + (1 - cfg.beta) * v_old
        v_neg = (1 + cfg.beta) * v_old - cfg.beta * v
        pos, neg = (
            self._x0_error(x_t.float() - t * v_pos, x0),
            self._x0_error(x_t.float() - t * v_neg, x0),
        )
        per = cfg.adv_clip / cfg.beta * (items.r * pos + (1 - items.r) * neg)
        loss = per.mean()
        stats = {
            "policy_loss": per.detach(),
            "r": items.r,
            "old_deviation": (v - v_old).detach().pow(2).flatten(1).mean(1),
        }
        if cfg.kl_beta > 0:
            with torch.no_grad(), ctx.reference():
                v_ref = policy.velocity(x_t, items.sigma, cond, 1.0).float()
            kl = (v - v_ref).pow(2).flatten(1).mean(1)
            loss = loss + cfg.kl_beta * kl.mean()
            stats["kl_ref"] = kl.detach()
        return LossOutput(loss, stats)

    def end_iteration(self, optimizer_steps: int) -> dict[str, float]:
        """old <- d old + (1 - d) theta, with d growing with the optimizer steps taken."""
        self.optimizer_steps += optimizer_steps
        decay = self.cfg.old_decay(self.optimizer_steps)
        self.old.step(decay)
        return {"train/old_decay": decay}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.old.state_dict(), "optimizer_steps": torch.tensor(self.optimizer_steps)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.old.load_state_dict(state)
        self.optimizer_steps = int(state["optimizer_steps"])

    def _x0_error(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        err = (x0_hat - x0).pow(2).flatten(1).mean(1)
        if not self.cfg.adaptive_weight:
            return err
        with torch.no_grad():
            w = (x0_hat.double() - x0.double()).abs().flatten(1).mean(1).clamp_min(1e-5)
        return err / w.float()
