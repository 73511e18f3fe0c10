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

from alignflow.sdk.advantages import GroupAdvantages
from alignflow.sdk.algorithms.base import Algorithm, LossOutput, StepContext
from alignflow.sdk.algorithms.flow_grpo import FlowGRPOConfig, Transitions, credit, ratio_loss
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.kernels import get_kernel
from alignflow.sdk.random import generator
from alignflow.sdk.tree import Tree, TreeSpec, prune_edges, tree_advantages, tree_rollout


@dataclass
class BranchGRPOConfig(FlowGRPOConfig):
    kl_beta: float = 0.0
    """no KL to the reference (the paper's setting)"""
    branch_steps: list[int] = field(default_factory=lambda: [0, 2, 4])
    """steps at which every node branches (increasing)"""
    widths: list[int] = field(default_factory=lambda: [2, 2, 2])
    """children per node at each branching step; their product must be sample.group_size"""
    keep_per_depth: int = 2
    """width pruning: train only this many edges (largest |A|) per tree and depth; 0 = all"""
    train_depths: list[int] = field(default_factory=list)
    """depth pruning: train only the edges at these depths (0 = first branching); [] = all"""

    def validate(self) -> None:
        super().validate()
        try:
            TreeSpec(tuple(self.branch_steps), tuple(self.widths))
        except ValueError as e:
            raise ConfigError(
                "algorithm.branch_steps",
                list(self.branch_steps),
                f"increasing step indices, one per width {list(self.widths)}",
            ) from e
        if self.keep_per_depth < 0:
            raise ConfigError("algorithm.keep_per_depth", self.keep_per_depth, "an int >= 0")
        bad = [d for d in self.train_depths if not 0 <= d < len(self.widths)]
        if bad:
            raise ConfigError(
                "algorithm.train_depths",
                list(self.train_depths),
                f"depths in 0..{len(self.widths) - 1}",
            )


@dataclass
class TreeGRPOConfig(BranchGRPOConfig):
    keep_per_depth: int = 0
    """every edge is trained (TreeGRPO does not prune)"""


def check_tree(spec: TreeSpec, num_steps: int, group_size: int) -> None:
    if spec.leaves != group_size:
        raise ConfigError(
            "algorithm.widths",
            list(spec.widths),
            f"widths whose product is sample.group_size ({group_size}); theirs is {spec.leaves}",
        )
    if spec.steps[-1] >= num_steps:
        raise ConfigError(
            "algorithm.branch_steps",
            list(spec.steps),
            f"steps below sample.num_steps ({num_steps})",
        )


def seeded_tree_rollout(
    cfg: FlowGRPOConfig,
    kernel,
    spec: TreeSpec,
    policy,
    cond,
    sigmas,
    *,
    guidance: float,
    group_size: int,
    seed: int,
    iteration: int,
    slots: list[int],
) -> Tree:
    """One tree per prompt: its initial noise keyed by (seed, iteration, slot), each
    edge's draw by (seed, iteration, slot, depth, node)."""
    check_tree(spec, len(sigmas) - 1, group_size)
    return tree_rollout(
        policy,
        cond,
        sigmas,
        spec,
        kernel,
        noise_level=cfg.noise_level,
        guidance=guidance,
        noise_generators=[generator(seed, "noise", iteration, s) for s in slots],
        edge_generator=lambda s, d, n: generator(seed, "tree", iteration, s, d, n),
        slots=slots,
    )


def edge_transitions(
    traj: Tree,
    rewards: torch.Tensor,
    *,
    clip: float,
    keep_per_depth: int = 0,
    depths: tuple[int, ...] = (),
    weight: torch.Tensor | None = None,
) -> Transitions:
    """The kept edges of the trees, each with the depth-normalised advantage of the node
    it leads to (``weight``: one loss weight for every edge, or None)."""
    adv = tree_advantages(rewards.to(traj.x0.device), traj.group, traj, clip=clip)
    keep = prune_edges(
        adv, traj.depth.cpu(), traj.tree.cpu(), keep_per_depth=keep_per_depth, depths=depths
    ).to(traj.x.device)
    first_leaf = {
        s: i for i, s in reversed(list(enumerate(traj.group.tolist())))
    }  # a condition row per tree
    return Transitions(
        x=traj.x[keep],
        x_next=traj.x_next[keep],
        log_prob=traj.log_prob[keep],
        step=traj.step[keep],
        sample=torch.tensor(
            [first_leaf[s] for s in traj.tree[keep].tolist()],
            dtype=torch.long,
            device=traj.x.device,
        ),
        advantage=adv.to(traj.x.device)[keep],
        sigmas=traj.sigmas,
        weight=None if weight is None else weight.expand(len(keep)).to(traj.x.device),
    )


class BranchGRPO(Algorithm):
    name = "branch_grpo"
    Config = BranchGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: BranchGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.spec = TreeSpec(tuple(self.cfg.branch_steps), tuple(self.cfg.widths))

    @classmethod
    def needs_reference(cls, config: BranchGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_tree(self.spec, num_steps, group_size)

    def rollout(self, policy, cond, sigmas, **run) -> Tree:
        return seeded_tree_rollout(self.cfg, self.kernel, self.spec, policy, cond, sigmas, **run)

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        # logged only: the edges get the tree's credit
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Tree, advantages, *, rewards: torch.Tensor, **_) -> Transitions:
        return edge_transitions(
            traj,
            rewards,
            clip=self.cfg.adv_clip,
            keep_per_depth=self.cfg.keep_per_depth,
            depths=tuple(self.cfg.train_depths),
        )

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)


class TreeGRPO(Algorithm):
    """TreeGRPO: BranchGRPO's trees and credit, every edge trained."""

    name = "tree_grpo"
    Config = TreeGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: TreeGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level
        self.spec = TreeSpec(tuple(self.cfg.branch_steps), tuple(self.cfg.widths))

    @classmethod
    def needs_reference(cls, config: TreeGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        check_tree(self.spec, num_steps, group_size)

    def rollout(self, policy, cond, sigmas, **run) -> Tree:
        return seeded_tree_rollout(self.cfg, self.kernel, self.spec, policy, cond, sigmas, **run)

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        # logged only: the edges get the tree's credit
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Tree, advantages, *, rewards: torch.Tensor, **_) -> Transitions:
        return edge_transitions(
            traj,
            rewards,
            clip=self.cfg.adv_clip,
            keep_per_depth=self.cfg.keep_per_depth,
            depths=tuple(self.cfg.train_depths),
        )

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)


@dataclass
class TempFlowGRPOConfig(FlowGRPOConfig):
    first_step: int = 0
    """earliest branching step"""
    last_step: int = -1
    """latest branching step; -1 = N - 2 (the last step is never trained)"""
    noise_weighting: bool = True
    """weight the step's loss by its noise std / the mean std over [first_step, last_step]"""


class TempFlowGRPO(Algorithm):
    """One branching step k per iteration, G children (see the module docstring)."""

    name = "tempflow_grpo"
    Config = TempFlowGRPOConfig
    minmax_stats = ("ratio",)

    def __init__(self, config: TempFlowGRPOConfig | None = None, params=()):
        super().__init__(config, params)
        self.kernel, self.noise_level = get_kernel(self.cfg.kernel), self.cfg.noise_level

    @classmethod
    def needs_reference(cls, config: TempFlowGRPOConfig) -> bool:
        return config.kl_beta > 0

    def check(self, num_steps: int, group_size: int) -> None:
        self.candidates(num_steps)

    def candidates(self, num_steps: int) -> list[int]:
        last = num_steps - 2 if self.cfg.last_step < 0 else min(self.cfg.last_step, num_steps - 2)
        if last < self.cfg.first_step:
            raise ConfigError("algorithm.first_step", self.cfg.first_step, f"a step <= {last}")
        return list(range(max(self.cfg.first_step, self.cfg.ode_first), last + 1))

    def tree_spec(self, num_steps: int, iteration: int, seed: int, group_size: int) -> TreeSpec:
        """This iteration's branching step k, drawn from (seed, iteration)."""
        steps = self.candidates(num_steps)
        k = steps[int(torch.randint(len(steps), (), generator=generator(seed, "plan", iteration)))]
        return TreeSpec((k,), (group_size,))

    def rollout(
        self, policy, cond, sigmas, *, seed: int, iteration: int, group_size: int, **run
    ) -> Tree:
        spec = self.tree_spec(len(sigmas) - 1, iteration, seed, group_size)
        return seeded_tree_rollout(
            self.cfg,
            self.kernel,
            spec,
            policy,
            cond,
            sigmas,
            seed=seed,
            iteration=iteration,
            group_size=group_size,
            **run,
        )

    def advantages(self, rewards, group, terms=None) -> GroupAdvantages:
        # logged only: the edges get the tree's credit
        return credit(self.cfg, rewards, group, terms)

    def training_items(self, traj: Tree, advantages, *, rewards: torch.Tensor, **_) -> Transitions:
        return edge_transitions(
            traj, rewards, clip=self.cfg.adv_clip, weight=self.noise_weight(traj)
        )

    def noise_weight(self, traj: Tree) -> torch.Tensor | None:
        """The branching step's noise std over the mean std of the candidate steps."""
        if not self.cfg.noise_weighting:
            return None
        sigmas, N = traj.sigmas, len(traj.sigmas) - 1
        x = traj.x[:1]
        std = torch.stack(
            [
                self.kernel(
                    x, torch.zeros_like(x), sigmas, i, noise_level=self.noise_level, x_next=x
                ).std.flatten()[0]
                for i in self.candidates(N)
            ]
        )
        k = int(traj.step[0])
        return (std[self.candidates(N).index(k)] / std.mean()).float().reshape(1)

    def loss(self, policy, items: Transitions, cond, ctx: StepContext) -> LossOutput:
        return ratio_loss(self.cfg, self.kernel, policy, items, cond, ctx)
