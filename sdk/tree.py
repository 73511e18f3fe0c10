"""Tree rollouts and their credit assignment (BranchGRPO, arXiv 2509.06040; TreeGRPO,
arXiv 2512.08153; TempFlow-GRPO, arXiv 2508.04324 is the one-level case).

A prompt's rollout is a tree. It starts from one initial noise; steps are ODE except
at the branching steps b_1 < ... < b_d, where every node of the frontier spawns w_m
children by independent draws of the SDE kernel. The leaves (L = w_1 ... w_d of them)
are the prompt's samples; each branching draw is an *edge* with a log-prob, and edges
are what is trained. Shared prefixes are computed once: a tree with L leaves costs
far fewer denoiser calls than L independent rollouts.

Credit (:func:`tree_advantages`): a node's value is the mean reward of the leaves
under it; at each depth the values of a tree's nodes are z-scored together (per-depth
normalisation), and an edge is trained with the advantage of the node it leads to.
Leaves are laid out depth-first, so the leaves under node n at depth d are the
contiguous range [n L_d, (n + 1) L_d) of its tree's leaves, L_d = w_{d+1} ... w_D.

Pruning (:func:`prune_edges`) selects which edges are *trained* (the largest |A| per
tree and depth, or only some depths); what is rolled out is never pruned, so the
rewards and the group statistics always see every leaf.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alignflow.sdk.batching import SHARED, repeat_interleave
from alignflow.sdk.kernels import KERNELS, Kernel
from alignflow.sdk.policy import FlowPolicy


@dataclass(frozen=True)
class TreeSpec:
    """Branching steps (increasing step indices) and the children per node at each."""

    steps: tuple[int, ...]
    widths: tuple[int, ...]

    def __post_init__(self):
        if not self.steps or len(self.steps) != len(self.widths):
            raise ValueError(
                f"TreeSpec: {len(self.steps)} branching steps but {len(self.widths)} widths"
            )
        if list(self.steps) != sorted(set(self.steps)) or self.steps[0] < 0:
            raise ValueError(
                f"TreeSpec: branching steps {self.steps} must be distinct, >= 0 and increasing"
            )
        if any(w < 1 for w in self.widths):
            raise ValueError(f"TreeSpec: widths {self.widths} must be >= 1")

    @property
    def leaves(self) -> int:
        return math.prod(self.widths)

    def nodes(self, depth: int) -> int:
        """Nodes at ``depth`` (0 = the first branching's children)."""
        return math.prod(self.widths[: depth + 1])

    def leaves_under(self, depth: int) -> int:
        return math.prod(self.widths[depth + 1 :])


@dataclass
class Tree:
    """P trees. Leaves are prompt-major, depth-first within a prompt.

    Attributes:
        x0: [P * L, ...] leaves; group: [P * L] the tree (prompt slot) of each leaf.
        x, x_next: [M, ...] an edge's parent state and the child drawn.
        log_prob: [M] rollout log-prob of x_next; mean: [M, ...]; std: [M].
        step, depth, node: [M] long; node = the child's index among its tree's nodes
            at that depth; tree: [M] long prompt slot of the edge.
        sigmas: [N+1] the schedule; spec: the tree's shape.
        peeks: always None (nothing but the leaves is scored).
    """

    x0: torch.Tensor
    group: torch.Tensor
    x: torch.Tensor
    x_next: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    step: torch.Tensor
    depth: torch.Tensor
    node: torch.Tensor
    tree: torch.Tensor
    sigmas: torch.Tensor = field(metadata=SHARED)
    spec: Any = field(default=None, metadata=SHARED)
    peeks: None = None


@torch.no_grad()
def tree_rollout(
    policy: FlowPolicy,
    cond: Any,
    sigmas: torch.Tensor,
    spec: TreeSpec,
    kernel: Kernel,
    *,
    noise_level: float,
    guidance: float,
    noise_generators: list[torch.Generator],
    edge_generator: Callable[[int, int, int], torch.Generator],
    slots: list[int] | None = None,
) -> Tree:
    """Roll out one tree per prompt of ``cond`` (P prompts, not repeated).

    Args:
        noise_generators: P generators, one initial noise per tree.
        edge_generator: ``(slot, depth, node index within the tree) -> generator`` of
            the SDE draw that creates that node.
        slots: the P prompts' slot ids (default 0..P-1), stored as ``group`` / ``tree``.
    """
    from alignflow.sdk.batching import batch_size

    P, N = batch_size(cond), len(sigmas) - 1
    slots = list(range(P)) if slots is None else list(slots)
    if spec.steps[-1] >= N:
        raise ValueError(
            f"tree_rollout: branching step {spec.steps[-1]} is past the last of {N} steps"
        )
    ode = KERNELS["ode"]
    x = policy.noise(P, noise_generators)
    frontier_cond, per_tree = cond, 1
    rec: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("x", "x_next", "log_prob", "mean", "std", "step", "depth", "node", "tree")
    }
    for i in range(N):
        sigma = sigmas[i].to(x.device).expand(x.shape[0])
        if i not in spec.steps:
            v = policy.velocity(x, sigma, frontier_cond, guidance)
            x = ode(x, v, sigmas, i).x_next
            continue
        d = spec.steps.index(i)
        w = spec.widths[d]
        x = x.repeat_interleave(w, dim=0)
        frontier_cond = repeat_interleave(frontier_cond, w)
        per_tree *= w
        node = torch.arange(per_tree).repeat(P)  # node index within its tree, prompt-major
        gens = [edge_generator(slots[p], d, n) for p in range(P) for n in range(per_tree)]
        v = policy.velocity(x, sigmas[i].to(x.device).expand(x.shape[0]), frontier_cond, guidance)
        out = kernel(x, v, sigmas, i, noise_level=noise_level, generator=gens)
        rec["x"].append(x)
        rec["x_next"].append(out.x_next)
        rec["log_prob"].append(out.log_prob)
        rec["mean"].append(out.mean)
        rec["std"].append(out.std.flatten())
        rec["step"].append(torch.full((len(x),), i, dtype=torch.long))
        rec["depth"].append(torch.full((len(x),), d, dtype=torch.long))
        rec["node"].append(node)
        rec["tree"].append(torch.tensor(slots).repeat_interleave(per_tree))
        x = out.x_next
    dev = x.device
    return Tree(
        x0=x,
        group=torch.tensor(slots, device=dev).repeat_interleave(spec.leaves),
        sigmas=sigmas,
        spec=spec,
        **{k: torch.cat(v).to(dev) for k, v in rec.items()},
    )


def tree_advantages(
    rewards: torch.Tensor, group: torch.Tensor, tree: Tree, *, eps: float = 1e-4, clip: float = 5.0
) -> torch.Tensor:
    """Per-edge advantages [M] of ``tree`` from leaf rewards [B] with their slots
    ``group`` [B] (each tree's leaves in depth-first order): node value = mean of its
    leaves; z-scored over the nodes of the same tree and depth (population std);
    clamped to [-clip, clip]. A depth whose nodes are all equal gets 0."""
    spec = tree.spec
    slots = torch.unique(group)
    r = torch.stack([rewards[group == s] for s in slots]).double()  # [P, L]
    if r.shape[1] != spec.leaves:
        raise ValueError(
            f"tree_advantages: {r.shape[1]} leaves per tree, the spec has {spec.leaves}"
        )
    per_depth = []
    for d in range(len(spec.steps)):
        values = r.view(len(slots), spec.nodes(d), spec.leaves_under(d)).mean(-1)  # [P, nodes]
        denom = values.std(1, unbiased=False, keepdim=True) + eps
        dev = values - values.mean(1, keepdim=True)
        per_depth.append(torch.where(denom > 0, dev / denom, 0.0).clamp(-clip, clip))
    row = torch.searchsorted(slots, tree.tree.cpu())
    adv = torch.stack(
        [
            per_depth[d][p, n]
            for d, p, n in zip(tree.depth.tolist(), row.tolist(), tree.node.tolist())
        ]
    )
    return adv.float()


def prune_edges(
    advantages: torch.Tensor,
    depth: torch.Tensor,
    prompt: torch.Tensor,
    *,
    keep_per_depth: int = 0,
    depths: tuple[int, ...] = (),
) -> torch.Tensor:
    """Indices of the edges to train: only ``depths`` (all if empty), and per (tree,
    depth) only the ``keep_per_depth`` edges with the largest |advantage| (all if 0)."""
    chosen = []
    for d in torch.unique(depth).tolist():
        if depths and d not in depths:
            continue
        for p in torch.unique(prompt).tolist():
            idx = torch.nonzero((depth == d) & (prompt == p)).flatten()
            if keep_per_depth and len(idx) > keep_per_depth:
                top = advantages[idx].abs().argsort(descending=True, stable=True)[:keep_per_depth]
                idx = idx[top.sort().values]
            chosen.append(idx)
    return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)
