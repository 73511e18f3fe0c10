"""The contract between the trainer and an algorithm.

Per iteration the trainer asks the algorithm for a :class:`~alignflow.sdk.plans.StepPlan`,
rolls it out with the algorithm's kernel, scores the samples, and then

1. ``advantages(rewards, group, terms)`` -> per-sample advantages (``terms``: each
   reward term's scores and weight, when there are several);
2. ``training_items(trajectories, advantages, seed=, iteration=, rewards=)`` -> a batch
   of E training items (a dataclass whose tensors have E first, with a ``sample`` field [E]
   that says which rollout sample, hence which condition, an item belongs to); any
   draw here comes from a generator seeded by (seed, iteration, group slot, member);
3. for every shuffled micro-batch of items: ``loss(policy, items, cond, ctx)`` ->
   :class:`LossOutput`, whose gradient the trainer accumulates and applies.

Optional hooks: ``rollout(policy, cond, sigmas, guidance=, group_size=, seed=,
iteration=, slots=)`` replaces the core rollout (tree topologies; it must return an
object with ``x0`` [P * G, ...] and ``group``; an algorithm with ``scores_peeks = True``
also gets ``score``, latents [P * G, ...] -> rewards [P * G], for intermediate clean
samples, as DenseGRPO needs); ``bind(params)``, ``end_iteration(
optimizer_steps) -> metrics``, ``state_dict()`` / ``load_state_dict()`` for algorithms
that keep their own state (DiffusionNFT's old policy, saved in checkpoints).

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

    def advantages(self, rewards: torch.Tensor, group: torch.Tensor,
                   terms: dict[str, tuple[torch.Tensor, float]] | None = None) -> GroupAdvantages: ...

    def training_items(self, traj: Trajectories, advantages: torch.Tensor, *, seed: int, iteration: int,
                       rewards: torch.Tensor) -> Any: ...

    def loss(self, policy: FlowPolicy, items: Any, cond: Any, ctx: StepContext) -> LossOutput: ...


def algorithm_config(cls: type, args: dict[str, Any]) -> Any:
    """``cls.Config`` from config arguments. An experiment tunes the algorithm it ships
    with (``algorithm.noise_level`` ...); switching ``algorithm=`` on the command line
    keeps those keys, so keys that only *other* registered algorithms know are dropped
    with a warning. Keys no algorithm knows are a ConfigError."""
    import dataclasses
    import logging

    from alignflow.sdk.components import names, resolve
    from alignflow.sdk.config import dataclass_from

    known = {f.name for f in dataclasses.fields(cls.Config)}
    elsewhere: set[str] = set()
    for name in names("algorithm"):
        other = resolve("algorithm", name, "algorithm.name")
        elsewhere |= {f.name for f in dataclasses.fields(other.Config)}
    foreign = sorted(k for k in args if k not in known and k in elsewhere)
    if foreign:
        logging.getLogger(__name__).warning("algorithm %s does not use %s (set for another algorithm): ignored",
                                            cls.name, foreign)
    cfg = dataclass_from(cls.Config, {k: v for k, v in args.items() if k not in foreign}, "algorithm")
    cfg.validate()
    return cfg
