"""Groupwise rewards: a sample's score depends on the other samples of its prompt.

- ``pref_winrate`` (Pref-GRPO, Wang et al., arXiv 2508.20751): a pairwise judge compares
  every ordered pair (i, j) of a group, and sample i's reward is its win rate

      r_i = 1 / (G - 1) * sum_{j != i} [1(i beats j) + 0.5 * 1(tie)]

  Win rates are bounded and spread over [0, 1] however small the judge's score
  differences are, which the paper argues keeps a pointwise reward model's tiny,
  noisy gaps from being amplified by the group z-score (reward hacking). The judge is
  any pairwise model ``judge(media_a, media_b, prompts, metadata) -> P(a beats b)``;
  built in: :class:`ScoreJudge`, any registered pointwise reward compared with a tie
  margin.
- ``group_duplicates`` (in the spirit of DisCo, arXiv 2510.01399, whose reward
  penalises the same identity recurring across a group): minus the fraction of the
  other group members that are near-duplicates of sample i (cosine similarity of
  centred features above ``threshold``). For the digits default the features are
  the pixels: a policy that collapses to one drawing per prompt is penalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.rewards import RewardOutput, check_output


def _group_members(groups: torch.Tensor) -> list[torch.Tensor]:
    return [torch.nonzero(groups == g).flatten() for g in torch.unique(groups)]


def _select(media: Any, idx: torch.Tensor) -> Any:
    if isinstance(media, torch.Tensor):
        return media[idx]
    if isinstance(media, (list, tuple)):
        return [media[int(i)] for i in idx]
    return media[idx]


class ScoreJudge:
    """A pairwise judge from a pointwise reward: a beats b when its score is higher by
    more than ``margin``; within the margin it is a tie (0.5)."""

    def __init__(self, reward: Any, margin: float = 0.0):
        self.reward, self.margin = reward, margin
        self.modality = getattr(reward, "modality", None)

    def scores(
        self, media: Any, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        return check_output(
            self.reward(media, prompts, metadata), len(prompts), "pref_winrate.judge"
        ).scores

    def compare(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """P(a beats b) for score tensors of the same shape."""
        return torch.where((a - b).abs() <= self.margin, 0.5, (a > b).float())


class PairwiseWinRate:
    """Pref-GRPO's win rate within each group (module docstring). Components:
    ``judge_score`` (the judge's pointwise score, for monitoring)."""

    groupwise = True

    def __init__(self, judge: Mapping[str, Any], margin: float = 0.0):
        from alignflow.sdk.components import resolve
        from alignflow.sdk.config import split_component

        name, args = split_component(dict(judge), "reward.judge")
        args.pop("weight", None)
        if name in ("pref_winrate", "group_duplicates"):
            raise ConfigError(
                "reward.judge.name", name, "a pointwise reward (the judge of the pairs)"
            )
        self.judge = ScoreJudge(resolve("reward", name, "reward.judge.name")(**args), margin)
        self.modality = self.judge.modality

    def __call__(
        self,
        media: Any,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        groups: torch.Tensor,
    ) -> RewardOutput:
        scores = self.judge.scores(media, prompts, metadata)
        out = torch.full((len(prompts),), float("nan"))
        for idx in _group_members(groups.cpu()):
            s = scores[idx]
            if len(idx) < 2:
                continue  # a win rate needs an opponent: not applicable
            wins = self.judge.compare(s[:, None], s[None, :])  # [G, G]: row beats column
            wins.fill_diagonal_(0.0)
            out[idx] = wins.sum(1) / (len(idx) - 1)
        return RewardOutput(out, {"judge_score": scores})


class GroupDuplicates:
    """Minus the fraction of a sample's group mates whose centred features have cosine
    similarity above ``threshold`` with its own (0 = no near-duplicate in the group)."""

    groupwise = True

    def __init__(self, threshold: float = 0.95, modality: str = "image"):
        if not -1 <= threshold <= 1:
            raise ConfigError("reward.threshold", threshold, "a cosine similarity in [-1, 1]")
        self.threshold, self.modality = threshold, modality

    def __call__(
        self,
        media: Any,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        groups: torch.Tensor,
    ) -> RewardOutput:
        if not isinstance(media, torch.Tensor):
            raise RewardError(
                f"group_duplicates compares pixel tensors; got {type(media).__name__}"
            )
        f = media.float().flatten(1).cpu()
        f = torch.nn.functional.normalize(f - f.mean(1, keepdim=True), dim=1)
        out = torch.zeros(len(f))
        nearest = torch.zeros(len(f))
        for idx in _group_members(groups.cpu()):
            if len(idx) < 2:
                continue
            sim = f[idx] @ f[idx].T
            sim.fill_diagonal_(-2.0)
            out[idx] = -(sim > self.threshold).float().sum(1) / (len(idx) - 1)
            nearest[idx] = sim.max(1).values
        return RewardOutput(out, {"nearest_similarity": nearest})
