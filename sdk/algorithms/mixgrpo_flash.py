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

from alignflow.sdk.algorithms.mixgrpo import MixGRPO, MixGRPOConfig
from alignflow.sdk.batching import repeat_interleave
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.plans import StepPlan
from alignflow.sdk.rollout import Trajectories, rollout, rollout_generators
from alignflow.sdk.solvers import compress, dpm_solver_2m


@dataclass
class MixGRPOFlashConfig(MixGRPOConfig):
    tail_ratio: float = 0.4
    """steps of the tail after the window, as a fraction of the original tail (post_compress_ratio)"""

    def validate(self) -> None:
        super().validate()
        if not 0 < self.tail_ratio <= 1:
            raise ConfigError("algorithm.tail_ratio", self.tail_ratio, "a float in (0, 1]")


class MixGRPOFlash(MixGRPO):
    name = "mixgrpo_flash"
    Config = MixGRPOFlashConfig

    def rollout(self, policy, cond, sigmas, *, guidance: float, group_size: int, seed: int, iteration: int,
                slots: list[int]) -> Trajectories:
        N, G = len(sigmas) - 1, group_size
        plan = self.plan(N, iteration, seed)
        end = plan.trained_steps[-1] + 1
        head = StepPlan(plan.sde[:end], plan.train[:end], plan.shared_prefix)
        noise, sde = rollout_generators(seed, iteration, slots, G, shared=True)
        traj = rollout(policy, cond, sigmas[:end + 1], head, self.kernel, noise_level=self.noise_level,
                       guidance=guidance, group_size=G, share_noise=True, noise_generators=noise, sde_generators=sde)
        x0 = dpm_solver_2m(policy, traj.x0, repeat_interleave(cond, G), compress(sigmas[end:], self.cfg.tail_ratio),
                           guidance)
        return dataclasses.replace(traj, x0=x0, sigmas=sigmas)
