"""Rewards scored in a background thread while the next batch rolls out.

The trainer submits each rollout batch (and each column of an algorithm's peeks) as
soon as it is decoded and collects every submission's scores once the iteration's
rollouts are done. A call that fails at run time
(it raised, returned inf: :class:`~alignflow.sdk.errors.RewardFailure`, or outlived
``timeout`` seconds) does not end the collection: its batch comes back as None (NaN
for the trainer), so its samples leave their groups, and its reason is returned for the trainer's
``train.reward_failures`` policy. A timed-out call cannot be stopped; it is abandoned
in its thread, and the batches queued behind it go to a fresh worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import torch

from alignflow.sdk.errors import RewardFailure
from alignflow.sdk.rewards import RewardOutput

log = logging.getLogger(__name__)


def _pool() -> ThreadPoolExecutor:
    # One intra-op thread for the reward worker: a second OpenMP team of full size
    # would compete with the main thread's for the same cores (measured: the
    # denoiser's forward ran 2.7x slower on 2 cores once a reward had run).
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="reward", initializer=torch.set_num_threads, initargs=(1,)
    )


class RewardWorker:
    """``score(media, prompts, metadata, groups, **options) -> (RewardOutput, seconds)``
    run in one background thread, submission by submission."""

    def __init__(self, score: Callable[..., tuple[RewardOutput, float]], timeout: float = 0.0):
        self.score, self.timeout = score, timeout
        self.pool = _pool()
        self.jobs: list[tuple] = []
        self.futures: list[Future] = []

    def submit(
        self, media, prompts: list[str], metadata: list[dict], groups: torch.Tensor, **options
    ) -> None:
        self.jobs.append(((media, prompts, metadata, groups), options))
        self.futures.append(self.pool.submit(self.score, *self.jobs[-1][0], **options))

    def collect(self) -> tuple[list[RewardOutput | None], float, list[str]]:
        """Every submission's output in submission order (None where it failed), the
        seconds the reward computed, and the failures' reasons."""
        jobs, futures = self.jobs, self.futures
        self.jobs, self.futures = [], []
        outputs: list[RewardOutput | None] = []
        seconds, reasons = 0.0, []
        for k, future in enumerate(futures):
            try:
                out, sec = future.result(timeout=self.timeout or None)
                outputs.append(out)
                seconds += sec
                continue
            except RewardFailure as e:
                reasons.append(str(e))
            except FutureTimeout:
                reasons.append(
                    f"a reward call took longer than train.reward_timeout = {self.timeout:g} s"
                )
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = _pool()
                for j in range(k + 1, len(futures)):
                    futures[j] = self.pool.submit(self.score, *jobs[j][0], **jobs[j][1])
            log.warning(
                "reward call failed, its %d samples are dropped: %s",
                len(jobs[k][0][1]),
                reasons[-1],
            )
            outputs.append(None)
        return outputs, seconds, reasons


def join(outputs: list[RewardOutput | None], sizes: list[int]) -> RewardOutput:
    """Outputs of consecutive batches of ``sizes`` samples as one; a failed batch (None)
    is NaN in every field."""
    keys = next((list(out.components) for out in outputs if out is not None), [])
    parts = [
        out if out is not None else RewardOutput(nan_scores(n), {k: nan_scores(n) for k in keys})
        for out, n in zip(outputs, sizes)
    ]
    return RewardOutput(
        torch.cat([p.scores for p in parts]),
        {k: torch.cat([p.components[k] for p in parts]) for k in keys},
    )


def nan_scores(n: int) -> torch.Tensor:
    return torch.full((n,), float("nan"))
