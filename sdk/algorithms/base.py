"""The contract between the trainer and an algorithm: every call the trainer makes.

Per iteration, data flows one way (shapes for P prompts of G samples, B = P * G):

1. ``rollout(policy, cond, sigmas, ...)`` -> a rollout whose ``x0`` [B, ...] are the
   final latents and whose ``peeks`` [B, M, ...] (or None) are extra latents to score;
2. the trainer decodes and scores ``x0`` and every peek column in its reward worker;
3. ``advantages(rewards, group, terms)`` -> per-sample advantages over the groups of
   every process;
4. ``training_items(rollout, advantages, rewards=, peek_rewards=, seed=, iteration=)``
   -> E training items;
5. for every shuffled micro-batch of items, ``loss(policy, items, cond, ctx)`` ->
   :class:`LossOutput`; the trainer owns backward, accumulation, the optimizer and EMA;
6. ``end_iteration(optimizer_steps)`` -> metrics, after the last optimizer step.

An algorithm never calls the trainer, and the trainer calls nothing that is not
declared here. What an algorithm keeps between iterations (DiffusionNFT's old policy)
is built in its constructor from the trainable parameters, and saved in checkpoints
through ``state_dict`` / ``load_state_dict``, so a resumed run repeats an
uninterrupted one.

A recipe subclasses :class:`Algorithm` once; recipes that share code share functions
(``flow_grpo.sde_rollout``, ``flow_grpo.ratio_loss``, ...), never a subclass of another
recipe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from alignflow.sdk.advantages import GroupAdvantages
from alignflow.sdk.kernels import Kernel
from alignflow.sdk.policy import FlowPolicy


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


class Algorithm(ABC):
    """Base class of every recipe: the declared calls, with no-op defaults where doing
    nothing is a valid choice.

    Class attributes a recipe sets:
        name: its component name (``algorithm.name``).
        Config: its config dataclass; every option the recipe reads is a field of it.
        minmax_stats: loss stats also logged as min and max (``("ratio",)``).

    Attributes the constructor sets:
        cfg: the validated config.
        kernel, noise_level: the SDE kernel and its noise level of the rollout (the
            trainer's KL-drift probe uses them; an ODE-only recipe names the ODE kernel
            and 0, and the probe then uses Flow-GRPO's SDE at 0.7).
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    minmax_stats: ClassVar[tuple[str, ...]] = ()
    kernel: Kernel
    noise_level: float

    def __init__(self, config: Any = None, params: Sequence[torch.nn.Parameter] = ()):
        """``config``: an instance of ``Config`` (default: its defaults); ``params``: the
        trainable parameters, for recipes that keep their own copy of them."""
        self.cfg = config if config is not None else self.Config()
        self.cfg.validate()

    @classmethod
    def config_from(cls, args: dict[str, Any]) -> Any:
        """The config dataclass from config arguments; raises ConfigError."""
        return algorithm_config(cls, args)

    @classmethod
    def needs_reference(cls, config: Any) -> bool:
        """Whether ``loss`` evaluates the frozen reference with this config. Asked before
        the weights are wrapped: full fine-tuning keeps a frozen copy only if so."""
        return False

    def check(self, num_steps: int, group_size: int) -> None:
        """Raise ConfigError if this recipe cannot run with ``sample.num_steps`` and
        ``sample.group_size`` (checked when the trainer is built, not at iteration 0)."""
        return  # the default: any number of steps and group size will do

    @abstractmethod
    def rollout(
        self,
        policy: FlowPolicy,
        cond: Any,
        sigmas: torch.Tensor,
        *,
        guidance: float,
        group_size: int,
        seed: int,
        iteration: int,
        slots: list[int],
    ) -> Any:
        """G = ``group_size`` samples for each of the P prompts encoded in ``cond`` (not
        repeated), over the schedule ``sigmas`` [N+1]. ``slots`` [P] are the prompts'
        global slots: every random draw must be keyed by (seed, iteration, slot, member),
        never by the process or the batch, so that a sample is the same wherever it is
        rolled out.

        Returns a dataclass (batched along its first dimension, see ``batching``) with
        ``x0`` [P * G, ...] (prompt-major), ``group`` [P * G] and ``peeks`` [P * G, M,
        ...] or None: latents that the trainer also decodes and scores (column by
        column, without gold rewards) and hands back as ``peek_rewards``."""

    @abstractmethod
    def advantages(
        self,
        rewards: torch.Tensor,
        group: torch.Tensor,
        terms: dict[str, tuple[torch.Tensor, float]] | None = None,
    ) -> GroupAdvantages:
        """Per-sample advantages from the rewards [B_all] and prompt slots [B_all] of
        every process (``terms``: each reward term's scores [B_all] and weight, when
        there are several). NaN rewards leave their group and get 0."""

    @abstractmethod
    def training_items(
        self,
        rollout: Any,
        advantages: torch.Tensor,
        *,
        rewards: torch.Tensor,
        peek_rewards: torch.Tensor | None,
        seed: int,
        iteration: int,
    ) -> Any:
        """E training items from this process's rollout, advantages [B], rewards [B]
        and peek rewards [B, M]: a dataclass whose batched tensors have E first,
        including ``sample`` [E] (the rollout sample, hence the condition, of an item)
        and ``step`` [E] (the schedule step it trains, for the logs). Any draw comes
        from a generator keyed by (seed, iteration, slot, member)."""

    @abstractmethod
    def loss(self, policy: FlowPolicy, items: Any, cond: Any, ctx: StepContext) -> LossOutput:
        """The loss of a micro-batch of items (``cond``: one row per item)."""

    def end_iteration(self, optimizer_steps: int) -> dict[str, float]:
        """Called once after an iteration's ``optimizer_steps`` steps; returns metrics."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the recipe keeps between iterations, saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()``'s output (an empty dict for a stateless recipe)."""
        if state:
            raise ValueError(
                f"algorithm {self.name} keeps no state, but the checkpoint has {sorted(state)}"
            )


def algorithm_config(cls: type[Algorithm], args: dict[str, Any]) -> Any:
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
        logging.getLogger(__name__).warning(
            "algorithm %s does not use %s (set for another algorithm): ignored", cls.name, foreign
        )
    cfg = dataclass_from(
        cls.Config, {k: v for k, v in args.items() if k not in foreign}, "algorithm"
    )
    cfg.validate()
    return cfg
