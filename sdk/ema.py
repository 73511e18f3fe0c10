"""Exponential moving average of the trained parameters (evaluation weights; DiffusionNFT's
"old" policy)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from alignflow.sdk.sharded import assign, whole


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, after every ``update_every``-th
    optimizer step. The shadow is kept in float32 whatever the parameters' dtype."""

    def __init__(self, params: Sequence[nn.Parameter], decay: float, update_every: int = 1):
        self.params = list(params)
        self.decay, self.update_every = decay, update_every
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.num_steps = 0

    @torch.no_grad()
    def step(self, decay: float | None = None) -> None:
        """One update; ``decay`` overrides the fixed decay (ramped schedules)."""
        self.num_steps += 1
        if self.num_steps % self.update_every:
            return
        d = self.decay if decay is None else decay
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1 - d)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Parameters replaced by their averages inside the context."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Whole tensors (FSDP2's shards gathered: every process calls this)."""
        state = {f"shadow.{i}": whole(s) for i, s in enumerate(self.shadow)}
        state["num_steps"] = torch.tensor(self.num_steps)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, s in enumerate(self.shadow):
            assign(s, state[f"shadow.{i}"])
        self.num_steps = int(state["num_steps"])
