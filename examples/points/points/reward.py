"""How close a point cloud gathers to the place its prompt names."""

from __future__ import annotations

import torch

from alignflow.sdk.components import component
from alignflow.sdk.rewards import RewardOutput


@component("reward", "gather")
class GatherReward:
    """-| mean of the points - the prompt's (x, y) |; component ``hit``: 1 when the
    cloud's centre is within ``tolerance`` of it."""

    modality = "points"

    def __init__(self, tolerance: float = 0.25):
        self.tolerance = tolerance

    def __call__(self, media: torch.Tensor, prompts, metadata) -> RewardOutput:
        target = torch.tensor([[float(m["x"]), float(m["y"])] for m in metadata])
        off = (media.mean(1) - target).norm(dim=-1)  # [B]
        return RewardOutput(-off, {"hit": (off < self.tolerance).float()})
