"""MixGRPO-Flash (Li et al., arXiv 2507.21802, the "Flash" variant).

MixGRPO (:mod:`~alignflow.sdk.algorithms.mixgrpo`) with a cheaper rollout: the ODE
steps *after* the SDE window are never trained, so they are replaced by a 2nd-order
solver, DPM-Solver++(2M) (:func:`~alignflow.sdk.solvers.dpm_solver_2m`), over a
compressed tail schedule of ceil(``tail_ratio`` x (N - e)) steps (e = end of the
window). The training loss and the window are MixGRPO's unchanged:

    x_0 .. x_k            ODE (Euler), computed once per prompt
    x_k .. x_e            SDE, recorded and trained (Flow-GRPO's clipped ratio)
    x_e .. x_N            DPM-Solver++(2M), ceil(tail_ratio (N - e)) evaluations

Reference defaults (the authors' FLUX script): dpm-solver++ order 2, applied after the
window ("post"), compression ratio 0.4; everything else as MixGRPO.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from alignflow.sdk.advantages import GroupAdvantages
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.algorithms.flow_grpo import Transitions, credit, ratio_loss, transitions
from alignflow.sdk.algorithms.mixgrpo import MixGRPOConfig, sliding_window
from alignflow.sdk.batching import repeat_interleave
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import get_kernel
from alignflow.sdk.plans import Plan, StepPlan, check_plan
from alignflow.sdk.rollout import Trajectories, seeded_rollout
from alignflow.sdk.solvers import compress, dpm_solver_2m


@dataclass
class MixGRPOFlashConfig(MixGRPOConfig):
    tail_ratio: float = 0.4
    """steps of the tail after the window, as a fraction of the original tail
    (post_compress_ratio)"""

    def validate(self) -> None:
        super().validate()
        if not 0 < self.tail_ratio <= 1:
            raise ConfigError("algorithm.tail_ratio", self.tail_ratio, "a float in (0, 1]")


class MixGRPOFlash(Algorithm):
    name = "mixgrpo_flash"
    Config = MixGRPOFlashConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: MixGRPOFlashConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.plan: Plan = sliding_window(self.cfg)

    @classmethod
    def needs_reference(cls, config: MixGRPOFlashConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_plan(self.plan, num_steps, self.name)

    def rollout(
        self,
        policy,
        cond,
        sigmas,
        *,
        guidance: float,
        group_size: int,
        seed: int,
        iteration: int,
        slots: list[int],
    ) -> Trajectories:
        """MixGRPO's rollout up to the end e of the window, then DPM-Solver++(2M) to 0."""
        plan = self.plan(len(sigmas) - 1, iteration, seed)
        end = plan.trained_steps[-1] + 1
        head = StepPlan(plan.sde[:end], plan.train[:end], plan.shared_prefix)
        traj = seeded_rollout(
            policy,
            cond,
            sigmas[: end + 1],
            head,
            self.kernel,
            noise_level=self.noise_level,
            guidance=guidance,
            group_size=group_size,
            seed=seed,
            iteration=iteration,
            slots=slots,
            share_noise=True,
        )
        x0 = dpm_solver_2m(
            policy,
            traj.x0,
            repeat_interleave(cond, group_size),
            compress(sigmas[end:], self.cfg.tail_ratio),
            guidance,
        )
        return dataclasses.replace(traj, x0=x0, sigmas=sigmas)

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Trajectories, advantages, **_) -> Transitions:
        return transitions(traj, advantages)

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)
