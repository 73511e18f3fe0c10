import math

import pytest
import torch

from alignflow.sdk.advantages import group_advantages


def test_group_zscore_matches_hand_computation():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    out = group_advantages(r, g, std="group", clip=5.0, eps=1e-4)
    std = math.sqrt(2 / 3)  # population std of 1, 2, 3
    expected = torch.tensor([-1 / (std + 1e-4), 0.0, 1 / (std + 1e-4), 0.0, 0.0, 0.0])
    torch.testing.assert_close(out.advantages, expected)
    assert out.zero_std_fraction == 0.5
    assert out.valid_fraction == 1.0


def test_global_std_uses_every_reward():
    r = torch.tensor([0.0, 2.0, 10.0, 14.0])
    g = torch.tensor([0, 0, 1, 1])
    out = group_advantages(r, g, std="global", eps=0.0, clip=100)
    s = r.std(unbiased=False)
    torch.testing.assert_close(out.advantages, torch.tensor([-1.0, 1.0, -2.0, 2.0]) / s)


def test_clamp_and_nan_samples_are_left_out():
    r = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, float("nan")])
    g = torch.zeros(9, dtype=torch.long)
    out = group_advantages(r, g, clip=2.0)
    assert out.advantages[7] == 2.0  # z = 2.65 before the clamp
    assert out.advantages[8] == 0.0
    valid = r[:8]
    expected0 = (0 - valid.mean()) / (valid.std(unbiased=False) + 1e-4)
    torch.testing.assert_close(out.advantages[0], expected0)
    assert out.valid_fraction == pytest.approx(8 / 9)


def test_groups_need_not_be_contiguous_or_start_at_zero():
    r = torch.tensor([1.0, 5.0, 3.0, 7.0])
    g = torch.tensor([7, 3, 7, 3])
    out = group_advantages(r, g, eps=0.0)
    torch.testing.assert_close(out.advantages, torch.tensor([-1.0, -1.0, 1.0, 1.0]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="std="):
        group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), std="batch")
    with pytest.raises(ValueError, match="must be"):
        group_advantages(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))


def test_per_term_advantages_sum_weighted_z_scores():
    from alignflow.sdk.advantages import term_advantages

    g = torch.tensor([0, 0, 1, 1])
    big = torch.tensor([0.0, 100.0, 5.0, 5.0])  # large spread in group 0, none in group 1
    small = torch.tensor([0.2, 0.1, 0.0, float("nan")])
    out = term_advantages({"big": (big, 1.0), "small": (small, 2.0)}, g, eps=0.0, clip=10)
    # group 0: z(big) = [-1, 1], z(small) = [1, -1] -> 1 * z + 2 * z = [1, -1]
    torch.testing.assert_close(out.advantages, torch.tensor([1.0, -1.0, 0.0, 0.0]))
    assert out.valid_fraction == 0.75 and out.zero_std_fraction == 0.5
    # the weighted sum of rewards would follow the large term only
    summed = group_advantages(big + 2 * small, g, eps=0.0, clip=10).advantages
    assert summed[0] < 0 < summed[1]
    assert term_advantages({"big": (big, 3.0)}, g, eps=0.0, clip=2).advantages.tolist() == [
        -2.0,
        2.0,
        0.0,
        0.0,
    ]
