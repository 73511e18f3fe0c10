"""The contract between the trainer and an algorithm.

Per iteration the trainer asks the algorithm for a :class:`~alignflow.sdk.plans.StepPlan`,
rolls it out with the algorithm's kernel, scores the samples, and then

1. ``advantages(rewards, group)`` -> per-sample advantages;
2. ``training_items(trajectories, advantages)`` -> a batch of E training items (a
   dataclass whose tensors have E first, with a ``sample`` field [E] that says which
   rollout sample, hence which condition, an item belongs to);
3. for every shuffled micro-batch of items: ``loss(policy, items, cond, ctx)`` ->
   :class:`LossOutput`, whose gradient the trainer accumulates and applies.

Everything else (optimizer, accumulation, EMA, checkpoints, logging, distribution)
is the trainer's.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from alignflow.sdk.advantages import GroupAdvantages
from alignflow.sdk.kernels import Kernel
from alignflow.sdk.plans import StepPlan
from alignflow.sdk.policy import FlowPolicy
from alignflow.sdk.rollout import Trajectories


@dataclass
class StepContext:
    """What a loss may need besides its items.

    Attributes:
        guidance: the CFG scale the rollout used (the loss must use the same).
        on_policy: no optimizer step has happened since the rollout, so the policy
            *is* the rollout policy: ratio-based losses use the freshly computed
            log-prob as the old one (ratio exactly 1) and report how far the stored
            rollout log-prob is from it.
        reference: a context manager factory inside which the policy is the frozen
            reference (LoRA off, or the frozen copy).
        iteration: the training iteration.
    """

    guidance: float
    on_policy: bool
    reference: Callable[[], AbstractContextManager]
    iteration: int


@dataclass
class LossOutput:
    """Attributes:
    loss: scalar to minimise, a mean over the micro-batch's items.
    stats: per-item [E] diagnostics (detached); the trainer logs their mean over the
        iteration, and also min and max for the names in ``Algorithm.minmax_stats``."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Algorithm(Protocol):
    name: str
    kernel: Kernel
    noise_level: float
    share_noise: bool
    """whether a group shares its initial noise"""
    needs_reference: bool
    """whether ``loss`` evaluates the reference policy (LoRA off / frozen copy)"""
    minmax_stats: tuple[str, ...]

    @classmethod
    def config_from(cls, args: dict[str, Any]) -> Any:
        """The algorithm's config dataclass from config arguments; raises ConfigError."""

    def plan(self, num_steps: int, iteration: int, seed: int) -> StepPlan: ...

    def advantages(self, rewards: torch.Tensor, group: torch.Tensor) -> GroupAdvantages: ...

    def training_items(self, traj: Trajectories, advantages: torch.Tensor) -> Any: ...

    def loss(self, policy: FlowPolicy, items: Any, cond: Any, ctx: StepContext) -> LossOutput: ...
