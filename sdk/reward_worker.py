"""Rewards scored in a background thread while the next batch rolls out.

The trainer submits each rollout batch as soon as it is decoded and collects every
batch's scores once the iteration's rollouts are done. A call that fails at run time
(it raised, returned inf: :class:`~alignflow.sdk.errors.RewardFailure`, or outlived
``timeout`` seconds) does not end the collection: its batch comes back NaN, so its
samples leave their groups, and its reason is returned for the trainer's
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
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward", initializer=torch.set_num_threads,
                              initargs=(1,))


class RewardWorker:
    """``score(media, prompts, metadata, groups) -> (RewardOutput, seconds)`` run in one
    background thread, batch by batch."""

    def __init__(self, score: Callable[..., tuple[RewardOutput, float]], timeout: float = 0.0):
        self.score, self.timeout = score, timeout
        self.pool = _pool()
        self.jobs: list[tuple] = []
        self.futures: list[Future] = []

    def submit(self, media, prompts: list[str], metadata: list[dict], groups: torch.Tensor) -> None:
        self.jobs.append((media, prompts, metadata, groups))
        self.futures.append(self.pool.submit(self.score, *self.jobs[-1]))

    def collect(self) -> tuple[RewardOutput, float, list[str]]:
        """Every submitted batch's output, joined in submission order (a failed batch is
        NaN in every field), the seconds the reward computed, and the failures' reasons."""
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
                reasons.append(f"a reward call took longer than train.reward_timeout = {self.timeout:g} s")
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = _pool()
                for j in range(k + 1, len(futures)):
                    futures[j] = self.pool.submit(self.score, *jobs[j])
            log.warning("reward call failed, its %d samples are dropped: %s", len(jobs[k][1]), reasons[-1])
            outputs.append(None)
        return _join(outputs, [len(job[1]) for job in jobs]), seconds, reasons


def _join(outputs: list[RewardOutput | None], sizes: list[int]) -> RewardOutput:
    keys = next((list(out.components) for out in outputs if out is not None), [])
    parts = [out if out is not None else RewardOutput(_nan(n), {k: _nan(n) for k in keys})
             for out, n in zip(outputs, sizes)]
    return RewardOutput(torch.cat([p.scores for p in parts]), {k: torch.cat([p.components[k] for p in parts]) for k in keys})


def _nan(n: int) -> torch.Tensor:
    return torch.full((n,), float("nan"))
