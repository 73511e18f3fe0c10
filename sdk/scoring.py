"""Scoring: a run's rewards applied to decoded samples.

The optimised reward is the weighted sum of the reward terms; the gold rewards are
scored beside it and logged, never optimised. During training every rollout batch,
and every column of an algorithm's peeks, is submitted to a background worker
(:mod:`~alignflow.sdk.reward_worker`) as soon as it is decoded, and collected once the
iteration's rollouts are done; evaluation calls the scorer directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from alignflow.sdk.batching import repeat_interleave
from alignflow.sdk.errors import RewardError
from alignflow.sdk.reward_worker import RewardWorker, join, nan_scores
from alignflow.sdk.rewards import RewardOutput, WeightedSum, check_output, score

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One rollout batch of a process: the algorithm's rollout and, one row per sample,
    the condition, prompts, metadata and prompt slots [B]."""

    rollout: Any
    cond: Any
    prompts: list[str]
    metadata: list[dict]
    group: torch.Tensor

    @classmethod
    def of(
        cls,
        rollout: Any,
        cond: Any,
        prompts: list[str],
        metadata: list[dict],
        slots: list[int],
        group_size: int,
    ) -> Batch:
        """From a rollout of P prompts (``cond``, ``prompts``, ``metadata`` and ``slots``
        per prompt); sets the rollout's ``group`` to the slots."""
        G = group_size
        group = torch.tensor(slots).repeat_interleave(G)
        rollout.group = group.to(rollout.x0.device)
        return cls(
            rollout,
            repeat_interleave(cond, G),
            [p for p in prompts for _ in range(G)],
            [m for m in metadata for _ in range(G)],
            group,
        )

    @property
    def num_peeks(self) -> int:
        return 0 if self.rollout.peeks is None else self.rollout.peeks.shape[1]


@dataclass
class Scored:
    """This process's rewards of one iteration.

    Attributes:
        reward: scores [B] and components (each term, each gold reward) [B].
        peeks: [B, M] rewards of the algorithm's peeks, or None.
        seconds: the reward's compute time.
        reasons: why this process's failed calls failed (their samples are NaN).
        failures: the failed calls of every process (counted by the trainer).
    """

    reward: RewardOutput
    peeks: torch.Tensor | None
    seconds: float
    reasons: list[str]
    failures: int = 0


class Scorer:
    """``scorer(media, prompts, metadata, groups)`` -> (RewardOutput, seconds);
    ``submit`` / ``collect`` do the same in the background worker."""

    def __init__(self, reward: WeightedSum, gold: dict, timeout: float = 0.0):
        self.reward, self.gold = reward, gold
        self.worker = RewardWorker(self, timeout)

    def __call__(
        self,
        media,
        prompts: list[str],
        metadata: list[dict],
        groups: torch.Tensor,
        gold: bool = True,
    ) -> tuple[RewardOutput, float]:
        start = time.perf_counter()
        out = check_output(
            self.reward(media, prompts, metadata, groups=groups), len(prompts), "reward"
        )
        for term, reward in (self.gold if gold else {}).items():
            out.components[f"gold/{term}"] = score(
                reward, media, prompts, metadata, groups, f"gold.{term}"
            ).scores
        return out, time.perf_counter() - start

    @property
    def groupwise(self) -> bool:
        """A reward term compares the samples of a prompt: a call must hold whole prompts."""
        return any(getattr(r, "groupwise", False) for r, _ in self.reward.terms.values())

    def submit(self, b: Batch, decode: Callable) -> None:
        """A batch's decoded samples, then each of its peek columns (no gold rewards);
        ``decode(latents, cond)`` is the policy's."""
        self.worker.submit(decode(b.rollout.x0, b.cond), b.prompts, b.metadata, b.group)
        for m in range(b.num_peeks):
            media = decode(b.rollout.peeks[:, m], b.cond)
            self.worker.submit(media, b.prompts, b.metadata, b.group, gold=False)

    def collect(self, batches: list[Batch]) -> Scored:
        """Wait for the submissions of ``batches`` (in the order submitted)."""
        outputs, seconds, reasons = self.worker.collect()
        finals, peeks, k = [], [], 0
        for b in batches:
            n, M = len(b.prompts), b.num_peeks
            finals.append(outputs[k])
            peeks.append(
                [o.scores if o is not None else nan_scores(n) for o in outputs[k + 1 : k + 1 + M]]
            )
            k += 1 + M
        peek_rewards = torch.cat([torch.stack(p, 1) for p in peeks]) if peeks and peeks[0] else None
        return Scored(
            join(finals, [len(b.prompts) for b in batches]), peek_rewards, seconds, reasons
        )


def check_failures(train: Any, scored: Scored, total: int) -> None:
    """``train.reward_failures``: 'error' stops at the first failed call, 'drop' goes
    on without the failed batches until ``train.reward_max_failures`` in all."""
    reason = scored.reasons[-1] if scored.reasons else "a reward call failed on another process"
    if scored.failures and train.reward_failures == "error":
        raise RewardError(f"{reason} (train.reward_failures=error; 'drop' leaves the batch out)")
    if total > train.reward_max_failures:
        raise RewardError(
            f"{total} reward calls have failed, more than train.reward_max_failures = "
            f"{train.reward_max_failures}; the last: {reason}"
        )


def check_nan(train: Any, rewards: torch.Tensor) -> None:
    """NaN rewards: an error with ``train.reward_failures=error``, else a warning (the
    samples leave their groups' statistics and get advantage 0)."""
    bad = int((~torch.isfinite(rewards)).sum())
    if bad and train.reward_failures == "error":
        raise RewardError(
            f"{bad} of {len(rewards)} rewards are NaN (train.reward_failures=error); "
            "set train.reward_failures=drop to leave such samples out of their group"
        )
    if bad:
        log.warning(
            "%d of %d samples have a NaN reward: left out of their group's statistics "
            "(advantage 0)",
            bad,
            len(rewards),
        )
