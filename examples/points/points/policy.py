"""The point-set policy: a FlowPolicy over [B, N, 2] latents (the points themselves)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from alignflow.sdk.components import component
from alignflow.sdk.random import randn


@dataclass
class Place:
    """The condition: where each prompt asks the points to gather, [B, 2]."""

    centre: torch.Tensor


class PointsPolicy:
    """v(x, sigma, centre) by an MLP over the flattened points; sigma 1 = noise.

    The points are media and latents at once (decode is the identity), so the policy
    needs no codec, and a fresh MLP is a base: its clouds sit anywhere, and RL moves
    them to the place each prompt names."""

    modality = "points"
    default_lora_targets = ("0", "2", "4")  # the MLP's Linear layers

    def __init__(self, num_points: int = 8, hidden: int = 64, seed: int = 0):
        self.num_points = num_points
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the base's weights are a function of the config
            self.net = nn.Sequential(
                nn.Linear(2 * num_points + 3, hidden), nn.SiLU(),
                nn.Linear(hidden, hidden), nn.SiLU(),
                nn.Linear(hidden, 2 * num_points),
            )  # fmt: skip

    def encode(self, prompts: list[str], metadata: list[dict] | None = None) -> Place:
        """The centre from the prompt's ``x`` and ``y`` columns, else from its text
        ("... around (0.5, -1)")."""
        centres = []
        for i, prompt in enumerate(prompts):
            row = (metadata or [{}] * len(prompts))[i] or {}
            found = re.search(r"\(\s*(-?[0-9.]+)\s*,\s*(-?[0-9.]+)\s*\)", prompt)
            xy = (row["x"], row["y"]) if "x" in row else found.groups() if found else (0, 0)
            centres.append([float(v) for v in xy])
        return Place(torch.tensor(centres))

    def noise(self, batch_size: int, generator) -> torch.Tensor:
        return randn((batch_size, self.num_points, 2), generator)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return torch.linspace(1.0, 0.0, num_steps + 1)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Place, guidance: float = 1.0):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0]).view(-1, 1)
        inp = torch.cat([x.flatten(1), sigma, cond.centre.to(x.dtype)], 1)
        return self.net(inp).view_as(x)

    def decode(self, latents: torch.Tensor, cond: Place | None = None) -> torch.Tensor:
        return latents.float()

    def to_latents(self, media: torch.Tensor) -> torch.Tensor:
        return media

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def to(self, device) -> PointsPolicy:
        self.net.to(device)
        return self


@component("policy", "points")
def load_points_policy(num_points: int = 8, hidden: int = 64, seed: int = 0) -> PointsPolicy:
    return PointsPolicy(num_points, hidden, seed)
