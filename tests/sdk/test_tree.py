"""Tree rollouts and tree credit assignment on a small tree, by hand."""

import math

import pytest
import torch

from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.random import generator
from alignflow.sdk.tree import TreeSpec, prune_edges, tree_advantages, tree_rollout
from tests.sdk.toys import GaussianPolicy


def test_advantages_of_a_two_by_two_tree_match_hand_computation():
    policy = GaussianPolicy(dim=2)
    spec = TreeSpec(steps=(1, 3), widths=(2, 2))
    tree = tree_rollout(
        policy,
        policy.encode(["0", "0"]),
        policy.sigmas(5),
        spec,
        KERNELS["flow_sde"],
        noise_level=0.7,
        guidance=1.0,
        noise_generators=[generator(p) for p in range(2)],
        edge_generator=lambda s, d, n: generator(s, d, n),
        slots=[7, 9],
    )
    rewards = torch.tensor(
        [
            1.0,
            2.0,
            3.0,
            5.0,  # slot 7: leaves (a1, a2) under a, (b1, b2) under b
            4.0,
            4.0,
            4.0,
            4.0,
        ]
    )  # slot 9: nothing to learn
    adv = tree_advantages(rewards, tree.group, tree, eps=0.0, clip=10)
    # edges: depth 0 (slot 7: a, b; slot 9: a, b), then depth 1 (slot 7: a1 a2 b1 b2; slot 9: ...)
    # depth 0, slot 7: values a = 1.5, b = 4 -> z = -1, +1; slot 9: all equal -> 0
    # depth 1, slot 7: values 1, 2, 3, 5 (mean 2.75, population std s)
    s = math.sqrt(((1 - 2.75) ** 2 + (2 - 2.75) ** 2 + (3 - 2.75) ** 2 + (5 - 2.75) ** 2) / 4)
    expected = [-1.0, 1.0, 0.0, 0.0] + [(v - 2.75) / s for v in (1, 2, 3, 5)] + [0.0] * 4
    torch.testing.assert_close(adv, torch.tensor(expected))
    assert tree.tree.tolist() == [7, 7, 9, 9] + [7] * 4 + [9] * 4
    # the leaves' order does not matter across trees, only within one
    perm = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    torch.testing.assert_close(
        tree_advantages(rewards[perm], tree.group[perm], tree, eps=0.0, clip=10), adv
    )


def test_pruning_trains_the_largest_advantages_and_never_drops_leaves():
    adv = torch.tensor([0.1, -2.0, 0.5, 1.5, 0.0, 0.3])
    depth = torch.tensor([0, 0, 1, 1, 1, 1])
    prompt = torch.tensor([0, 0, 0, 0, 0, 0])
    assert prune_edges(adv, depth, prompt, keep_per_depth=1).tolist() == [1, 3]
    assert prune_edges(adv, depth, prompt, depths=(1,)).tolist() == [2, 3, 4, 5]
    assert prune_edges(adv, depth, prompt).tolist() == [0, 1, 2, 3, 4, 5]


def test_tree_rollout_shares_prefixes_and_lays_out_leaves_depth_first():
    policy = GaussianPolicy(dim=4)
    cond = policy.encode(["1", "-1"])
    spec = TreeSpec(steps=(1, 3), widths=(3, 2))
    sigmas = policy.sigmas(5)
    tree = tree_rollout(
        policy,
        cond,
        sigmas,
        spec,
        KERNELS["flow_sde"],
        noise_level=0.7,
        guidance=1.0,
        noise_generators=[generator("n", p) for p in range(2)],
        edge_generator=lambda p, d, n: generator("e", p, d, n),
    )
    assert tree.x0.shape == (12, 4) and tree.group.tolist() == [0] * 6 + [1] * 6
    # denoiser calls: step 0 on 2 roots, steps 1-2 on 6 nodes, steps 3-4 on 12 leaves
    assert policy.calls == [2, 6, 6, 12, 12]
    assert len(tree.log_prob) == 2 * 3 + 2 * 6 and tree.depth.tolist() == [0] * 6 + [1] * 12
    # the children of one node start from the same state
    assert torch.equal(tree.x[0], tree.x[1]) and torch.equal(tree.x[0], tree.x[2])
    assert not torch.equal(tree.x_next[0], tree.x_next[1])
    assert (
        tree.node.tolist() == [0, 1, 2] * 2 + list(range(6)) * 2
        and tree.tree.tolist() == [0] * 3 + [1] * 3 + [0] * 6 + [1] * 6
    )
    # the same generators give the same tree
    again = tree_rollout(
        policy,
        cond,
        sigmas,
        spec,
        KERNELS["flow_sde"],
        noise_level=0.7,
        guidance=1.0,
        noise_generators=[generator("n", p) for p in range(2)],
        edge_generator=lambda p, d, n: generator("e", p, d, n),
    )
    assert torch.equal(again.x0, tree.x0)


def test_bad_tree_specs_are_rejected():
    with pytest.raises(ValueError, match="increasing"):
        TreeSpec(steps=(3, 1), widths=(2, 2))
    with pytest.raises(ValueError, match="widths"):
        TreeSpec(steps=(1,), widths=(2, 2))
