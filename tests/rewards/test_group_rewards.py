"""Groupwise rewards: Pref-GRPO's win rates and the duplicate penalty, by hand."""

import torch

from alignflow.rewards.group import GroupDuplicates, PairwiseWinRate, ScoreJudge
from alignflow.sdk.rewards import WeightedSum


def test_win_rate_is_the_fraction_of_group_mates_beaten_ties_half():
    judge = ScoreJudge(reward=None, margin=0.05)
    s = torch.tensor([0.9, 0.5, 0.52, 0.1])
    wins = judge.compare(s[:, None], s[None, :])
    wins.fill_diagonal_(0)
    # 0.9 beats all; 0.5 and 0.52 tie (within 0.05) and beat 0.1; 0.1 beats none
    assert (wins.sum(1) / 3).tolist() == [1.0, 0.5, 0.5, 0.0]


def test_pref_winrate_with_the_digit_classifier_judge_per_group():
    from alignflow.modalities.image.digits import load_digits

    x, y = load_digits("test")
    pick = [int((y == 3).nonzero()[k]) for k in range(3)] + [int((y == 7).nonzero()[0])]
    images = torch.cat([x[pick], x[pick]])  # two groups of 4: three 3s and a 7
    reward = PairwiseWinRate(judge={"name": "digit_classifier"})
    meta = [{"digit": 3}] * 8
    groups = torch.tensor([0] * 4 + [1] * 4)
    out = reward(images, ["3"] * 8, meta, groups=groups)
    p = out.components["judge_score"]
    expected = torch.tensor(
        [(p[i] > p[[j for j in range(4) if j != i]]).float().mean() for i in range(4)]
    )
    torch.testing.assert_close(out.scores[:4], expected)
    torch.testing.assert_close(out.scores[4:], expected)  # each group on its own
    assert out.scores[3] == 0.0  # the 7 loses to every 3
    # through the weighted sum, which hands groupwise terms the group ids
    total = WeightedSum({"pref": (reward, 2.0)})(images, ["3"] * 8, meta, groups=groups)
    torch.testing.assert_close(total.scores, 2 * out.scores)


def test_duplicates_are_penalised_within_a_group_only():
    torch.manual_seed(0)
    a, b, c = torch.rand(3, 1, 8, 8)
    images = torch.stack([a, a + 0.001, b, c, a, b])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    out = GroupDuplicates(threshold=0.95)(images, [""] * 6, [{}] * 6, groups=groups)
    # group 0: the first two are near-duplicates (1 of 3 mates each); b and c are unique
    torch.testing.assert_close(out.scores, torch.tensor([-1 / 3, -1 / 3, 0.0, 0.0, 0.0, 0.0]))
    assert out.components["nearest_similarity"][0] > 0.99
