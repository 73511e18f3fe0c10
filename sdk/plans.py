"""Step plans: which steps of a rollout are stochastic and which are trained.

A plan is asked afresh every iteration, so it may depend on the iteration (MixGRPO's
sliding window) or draw from a generator seeded by (seed, iteration) (Flow-GRPO-Fast's
random window); the same (seed, iteration) always gives the same plan, also after a
resume and on every process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from alignflow.sdk.random import generator


@dataclass(frozen=True)
class StepPlan:
    """The plan of one iteration's rollouts over N steps.

    Attributes:
        sde: length N; step i draws from the SDE kernel (else the ODE step).
        train: length N; step i is recorded and trained. A trained step must be SDE:
            a deterministic step has no log-probability.
        shared_prefix: steps [0, shared_prefix) are deterministic and computed once
            per prompt, then the group's members branch; it implies that a group
            shares its initial noise.
    """

    sde: tuple[bool, ...]
    train: tuple[bool, ...]
    shared_prefix: int = 0

    def __post_init__(self):
        n = len(self.sde)
        if len(self.train) != n:
            raise ValueError(f"StepPlan: sde has {n} steps but train has {len(self.train)}")
        bad = [i for i in range(n) if self.train[i] and not self.sde[i]]
        if bad:
            raise ValueError(
                f"StepPlan: steps {bad} are trained but deterministic; trained steps must be SDE"
            )
        if not 0 <= self.shared_prefix <= n or any(self.sde[: self.shared_prefix]):
            raise ValueError(
                f"StepPlan: shared_prefix={self.shared_prefix} must cover only ODE steps of 0..{n}"
            )

    @property
    def num_steps(self) -> int:
        return len(self.sde)

    @property
    def trained_steps(self) -> list[int]:
        return [i for i, t in enumerate(self.train) if t]

    @classmethod
    def deterministic(cls, num_steps: int) -> StepPlan:
        """All ODE, nothing trained: evaluation and plain sampling."""
        return cls((False,) * num_steps, (False,) * num_steps)


class Plan(Protocol):
    def __call__(self, num_steps: int, iteration: int, seed: int) -> StepPlan: ...


def _check_ode_first(ode_first: int, num_steps: int) -> None:
    if not 0 <= ode_first < num_steps:
        raise ValueError(
            f"ode_first={ode_first} must leave at least one of the {num_steps} steps stochastic"
        )


@dataclass(frozen=True)
class AllSDE:
    """Flow-GRPO (arXiv 2505.05470): every step SDE; train the first
    floor(train_fraction * N) steps. The default 0.99 leaves out only the last step,
    whose Gaussian is extremely sharp (s' = 0).

    ``ode_first`` K > 0 makes steps 0..K-1 deterministic and untrained: schedules that
    crowd steps near sigma = 1 (F5-TTS's sway sampling) give the flow SDE a noise scale
    g = a sqrt(s / (1 - s)) so large there that the Euler-Maruyama mean overshoots
    (docs/speech.md has the numbers)."""

    train_fraction: float = 0.99
    ode_first: int = 0

    def __call__(self, num_steps: int, iteration: int, seed: int) -> StepPlan:
        _check_ode_first(self.ode_first, num_steps)
        k = max(self.ode_first + 1, math.floor(self.train_fraction * num_steps))
        return StepPlan(
            tuple(i >= self.ode_first for i in range(num_steps)),
            tuple(self.ode_first <= i < k for i in range(num_steps)),
        )


@dataclass(frozen=True)
class SDEWindow:
    """Flow-GRPO-Fast: ODE up to a random start k, SDE for ``window`` steps, ODE after;
    only the window is trained. k is uniform in [0, max_start], max_start defaulting
    to N // 2 - window. The ODE prefix is shared by the group (computed once per
    prompt from one initial noise)."""

    window: int = 2
    max_start: int | None = None
    ode_first: int = 0  # the window never starts before this step (see AllSDE)

    def __call__(self, num_steps: int, iteration: int, seed: int) -> StepPlan:
        _check_ode_first(self.ode_first, num_steps)
        lo = self.ode_first
        hi = num_steps // 2 - self.window if self.max_start is None else self.max_start
        hi = min(max(hi, lo), num_steps - self.window - 1)  # never the sharp last step
        if hi < lo:
            raise ValueError(
                f"SDEWindow: a window of {self.window} does not fit in steps {lo}..{num_steps - 1}"
            )
        k = lo + int(
            torch.randint(0, hi - lo + 1, (), generator=generator(seed, "plan", iteration))
        )
        inside = tuple(k <= i < k + self.window for i in range(num_steps))
        return StepPlan(inside, inside, shared_prefix=k)


SLIDE_MODES = ("progressive", "frozen", "random")


@dataclass(frozen=True)
class SlidingWindow:
    """MixGRPO (arXiv 2507.21802): SDE and training only inside a window of ``window``
    steps, ODE before and after; the window's start k is driven by the iteration.

    - ``progressive``: k = ``start`` + ``stride`` x (iteration // ``every``); past
      ``max_start`` it rolls back to ``start`` (``roll_back``) or stays at ``max_start``.
    - ``frozen``: k = ``start`` for ever.
    - ``random``: k uniform in [start, max_start], drawn from (seed, iteration).

    ``max_start`` defaults to N - 1 - window, so the sharp last step is never trained.
    The ODE prefix before the window is shared by the group (MixGRPO draws one initial
    noise per prompt), so it is computed once per prompt. Reference defaults: N = 25,
    window 4, every 25 iterations, stride 1, roll back.
    """

    window: int = 4
    every: int = 25
    stride: int = 1
    mode: str = "progressive"
    roll_back: bool = True
    start: int = 0
    max_start: int | None = None

    def start_at(self, num_steps: int, iteration: int, seed: int) -> int:
        hi = (
            num_steps - 1 - self.window
            if self.max_start is None
            else min(self.max_start, num_steps - self.window)
        )
        if hi < self.start:
            raise ValueError(
                f"SlidingWindow: a window of {self.window} from step {self.start} does not fit in "
                f"{num_steps} steps (max_start {hi})"
            )
        if self.mode == "frozen":
            return self.start
        if self.mode == "random":
            return self.start + int(
                torch.randint(
                    0, hi - self.start + 1, (), generator=generator(seed, "plan", iteration)
                )
            )
        moves = iteration // self.every
        if self.roll_back:
            return self.start + self.stride * (moves % ((hi - self.start) // self.stride + 1))
        return min(self.start + self.stride * moves, hi)

    def __call__(self, num_steps: int, iteration: int, seed: int) -> StepPlan:
        k = self.start_at(num_steps, iteration, seed)
        inside = tuple(k <= i < k + self.window for i in range(num_steps))
        return StepPlan(inside, inside, shared_prefix=k)


def check_plan(plan: Plan, num_steps: int, recipe: str) -> None:
    """ConfigError on ``sample.num_steps`` if ``plan`` cannot lay out ``num_steps`` steps."""
    from alignflow.sdk.errors import ConfigError

    try:
        plan(num_steps, 0, 0)
    except ValueError as e:
        raise ConfigError(
            "sample.num_steps",
            num_steps,
            f"enough steps for algorithm {recipe}'s plan",
            hint=str(e),
        ) from e
