import math

import pytest
import torch

from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.rewards import RewardOutput, WeightedSum, check_output


class Const:
    modality = "image"

    def __init__(self, value, comp=None):
        self.value, self.comp = value, comp

    def __call__(self, media, prompts, metadata):
        scores = torch.full((len(prompts),), self.value)
        return RewardOutput(scores, {"hit": scores > 0}) if self.comp else scores


def test_weighted_sum_and_components():
    r = WeightedSum({"a": (Const(1.0, comp=True), 0.5), "b": (Const(2.0), 2.0)})
    out = r(None, ["p", "q"], [{}, {}])
    torch.testing.assert_close(out.scores, torch.tensor([4.5, 4.5]))
    assert set(out.components) == {"a", "b", "a/hit"}
    assert out.components["a/hit"].tolist() == [1.0, 1.0]


def test_a_single_term_does_not_repeat_itself():
    out = WeightedSum({"a": (Const(1.0, comp=True), 1.0)})(None, ["p"], [{}])
    assert set(out.components) == {"a/hit"}


def test_nan_propagates_and_none_means_not_applicable():
    out = check_output([1.0, None, 0.5], 3, "r")
    assert out.scores[0] == 1.0 and math.isnan(out.scores[1])


def test_rewards_of_different_modalities_cannot_be_summed():
    class Speech(Const):
        modality = "speech"

    with pytest.raises(ConfigError, match="rewards of one modality"):
        WeightedSum({"a": (Const(1.0), 1.0), "b": (Speech(1.0), 1.0)})


@pytest.mark.parametrize(
    "raw,match",
    [
        (torch.zeros(2, 1), r"shape \(2, 1\)"),
        ([1.0, float("inf"), 0.0], "returned inf for samples \\[1\\]"),
        (["good", "bad", "ugly"], "one number per sample"),
        (RewardOutput(torch.zeros(3), {"c": torch.zeros(2)}), "'r/c' returned shape"),
    ],
)
def test_malformed_outputs(raw, match):
    with pytest.raises(RewardError, match=match):
        check_output(raw, 3, "r")
