"""Tree rollouts: BranchGRPO (Li et al., arXiv 2509.06040), TreeGRPO (arXiv
2512.08153) and TempFlow-GRPO (He et al., arXiv 2508.04324).

A prompt's G samples are the leaves of a tree (:mod:`alignflow.sdk.tree`): one initial
noise, ODE steps, and at each branching step b_m every node spawns w_m children by
independent SDE draws (w_1 ... w_D = G). Shared prefixes are computed once. Each
branching draw is an edge with a log-prob; credit flows up the tree:

    V(node) = mean reward of the leaves under it
    A(edge into node) = (V(node) - mean_depth V) / std_depth V   (same tree, same depth)

and the loss on an edge is Flow-GRPO's clipped ratio with that advantage (plus the
KL to the reference if beta > 0). Pruning (``keep_per_depth``, ``train_depths``) picks
which edges are trained; every leaf is still rolled out and rewarded.

TempFlow-GRPO is the one-level tree: ODE to a branching step k, G children by one
SDE step, ODE after, so the advantage is exactly the credit of step k; k changes every
iteration (drawn from (seed, iteration)) and the step's loss is weighted by its noise
std relative to the mean over the candidate steps (noise-aware weighting; the paper's
exact constant is unverified).

The defaults are chosen for G = 8; the papers' exact tree shapes are in their
configs (unverified here): change ``branch_steps`` / ``widths`` so that the widths
multiply to ``sample.group_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignflow.sdk.algorithms.flow_grpo import FlowGRPO, FlowGRPOConfig, Transitions
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import generator
from alignflow.sdk.tree import Tree, TreeSpec, prune_edges, tree_advantages, tree_rollout


@dataclass
class BranchGRPOConfig(FlowGRPOConfig):
    branch_steps: list[int] = field(default_factory=lambda: [0, 2, 4])
    """steps at which every node branches (increasing)"""
    widths: list[int] = field(default_factory=lambda: [2, 2, 2])
    """children per node at each branching step; their product must be sample.group_size"""
    keep_per_depth: int = 0
    """width pruning: train only this many edges (largest |A|) per tree and depth; 0 = all"""
    train_depths: list[int] = field(default_factory=list)
    """depth pruning: train only the edges at these depths (0 = first branching); [] = all"""

    def validate(self) -> None:
        super().validate()
        try:
            TreeSpec(tuple(self.branch_steps), tuple(self.widths))
        except ValueError as e:
            raise ConfigError("algorithm.branch_steps", list(self.branch_steps),
                              f"increasing step indices, one per width {list(self.widths)}") from e
        if self.keep_per_depth < 0:
            raise ConfigError("algorithm.keep_per_depth", self.keep_per_depth, "an int >= 0")
        bad = [d for d in self.train_depths if not 0 <= d < len(self.widths)]
        if bad:
            raise ConfigError("algorithm.train_depths", list(self.train_depths), f"depths in 0..{len(self.widths) - 1}")


class BranchGRPO(FlowGRPO):
    name = "branch_grpo"
    Config = BranchGRPOConfig
    share_noise = True

    def tree_spec(self, num_steps: int, iteration: int, seed: int, group_size: int) -> TreeSpec:
        return TreeSpec(tuple(self.cfg.branch_steps), tuple(self.cfg.widths))

    def rollout(self, policy, cond, sigmas, *, guidance: float, group_size: int, seed: int, iteration: int,
                slots: list[int]) -> Tree:
        spec = self.tree_spec(len(sigmas) - 1, iteration, seed, group_size)
        if spec.leaves != group_size:
            raise ConfigError("algorithm.widths", list(spec.widths),
                              f"widths whose product is sample.group_size ({group_size}); theirs is {spec.leaves}")
        if spec.steps[-1] >= len(sigmas) - 1:
            raise ConfigError("algorithm.branch_steps", list(spec.steps), f"steps below sample.num_steps ({len(sigmas) - 1})")
        return tree_rollout(policy, cond, sigmas, spec, self.kernel, noise_level=self.noise_level, guidance=guidance,
                            noise_generators=[generator(seed, "noise", iteration, s) for s in slots],
                            edge_generator=lambda s, d, n: generator(seed, "tree", iteration, s, d, n), slots=slots)

    def training_items(self, traj: Tree, advantages: torch.Tensor, *, seed: int = 0, iteration: int = 0,
                       rewards: torch.Tensor | None = None) -> Transitions:
        adv = tree_advantages(rewards.to(traj.x0.device), traj.group, traj, clip=self.cfg.adv_clip)
        keep = prune_edges(adv, traj.depth.cpu(), traj.tree.cpu(), keep_per_depth=getattr(self.cfg, "keep_per_depth", 0),
                           depths=tuple(getattr(self.cfg, "train_depths", ()))).to(traj.x.device)
        first_leaf = {s: i for i, s in reversed(list(enumerate(traj.group.tolist())))}  # a condition row per tree
        return Transitions(
            x=traj.x[keep], x_next=traj.x_next[keep], log_prob=traj.log_prob[keep], step=traj.step[keep],
            sample=torch.tensor([first_leaf[s] for s in traj.tree[keep].tolist()], dtype=torch.long,
                                device=traj.x.device),
            advantage=adv.to(traj.x.device)[keep], sigmas=traj.sigmas, weight=self.edge_weights(traj, keep),
        )

    def edge_weights(self, traj: Tree, keep: torch.Tensor) -> torch.Tensor | None:
        return None


class TreeGRPO(BranchGRPO):
    """TreeGRPO: the same tree machinery, branching at every other early step, no pruning."""

    name = "tree_grpo"


@dataclass
class TempFlowGRPOConfig(FlowGRPOConfig):
    first_step: int = 0
    """earliest branching step"""
    last_step: int = -1
    """latest branching step; -1 = N - 2 (the last step is never trained)"""
    noise_weighting: bool = True
    """weight the step's loss by its noise std / the mean std over [first_step, last_step]"""


class TempFlowGRPO(BranchGRPO):
    """One branching step k per iteration, G children (see the module docstring)."""

    name = "tempflow_grpo"
    Config = TempFlowGRPOConfig

    def candidates(self, num_steps: int) -> list[int]:
        last = num_steps - 2 if self.cfg.last_step < 0 else min(self.cfg.last_step, num_steps - 2)
        if last < self.cfg.first_step:
            raise ConfigError("algorithm.first_step", self.cfg.first_step, f"a step <= {last}")
        return list(range(max(self.cfg.first_step, self.cfg.ode_first), last + 1))

    def tree_spec(self, num_steps: int, iteration: int, seed: int, group_size: int) -> TreeSpec:
        steps = self.candidates(num_steps)
        k = steps[int(torch.randint(len(steps), (), generator=generator(seed, "plan", iteration)))]
        return TreeSpec((k,), (group_size,))

    def edge_weights(self, traj: Tree, keep: torch.Tensor) -> torch.Tensor | None:
        if not self.cfg.noise_weighting:
            return None
        sigmas, N = traj.sigmas, len(traj.sigmas) - 1
        x = traj.x[:1]
        std = torch.stack([self.kernel(x, torch.zeros_like(x), sigmas, i, noise_level=self.noise_level,
                                       prev_sample=x).std.flatten()[0] for i in self.candidates(N)])
        k = int(traj.step[0])
        w = std[self.candidates(N).index(k)] / std.mean()
        return torch.full((len(keep),), float(w), device=traj.x.device)
