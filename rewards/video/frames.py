"""Frame-level video rewards: CLIP feature consistency between frames, and any image
reward lifted to video.

- :class:`CLIPFrameConsistency` (the product path's semantic consistency, e.g. VBench's
  subject/background consistency with CLIP or DINO features): the mean cosine between
  the CLIP image embeddings of consecutive sampled frames, and optionally of each frame
  with the first (identity drift). A ``CLIPModel`` from a local folder or hub id.
- :class:`PerFrame`: an image reward (any registered name or trusted dotted path, with
  its arguments) scored on sampled frames, aggregated per clip by ``mean``, ``min``,
  ``median`` or ``last``. Frames are scored as one image batch with each clip's prompt
  and metadata repeated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from alignflow.modalities.video.video import Video, sample_frames
from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.rewards import RewardOutput, check_output

AGGREGATIONS = ("mean", "min", "median", "last")


def _check(media: Any, name: str) -> Video:
    if not isinstance(media, Video):
        raise RewardError(f"{name}: expected a Video batch, got {type(media).__name__}")
    return media


class CLIPFrameConsistency:
    """Score = mean over consecutive sampled frames of cos(CLIP(f_t), CLIP(f_{t+1}));
    with ``anchor_weight`` a > 0, (1 - a) of that plus a x the mean cos to the first
    frame. Components ``adjacent`` and ``anchor``. Frozen clips score 1: pair it with
    a motion term."""

    modality = "video"

    def __init__(
        self,
        path: str = "openai/clip-vit-base-patch32",
        frames: int = 8,
        anchor_weight: float = 0.0,
        device: str = "",
        dtype: str = "float32",
    ):
        from alignflow.rewards.image.clip import CLIPEmbedder

        if frames < 2:
            raise ConfigError("reward.frames", frames, "an int >= 2 (pairs of frames)")
        if not 0 <= anchor_weight <= 1:
            raise ConfigError("reward.anchor_weight", anchor_weight, "a weight in [0, 1]")
        self.clip = CLIPEmbedder(path, "", device, dtype)
        self.frames, self.anchor_weight = frames, anchor_weight

    def __call__(
        self, media: Video, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        video = _check(media, "clip_frame_consistency")
        idx = sample_frames(video.num_frames, self.frames)
        x = video.frames[:, idx]  # [B, K, C, H, W]
        B, K = x.shape[:2]
        if x.shape[2] == 1:
            x = x.expand(-1, -1, 3, -1, -1)
        emb = self.clip.images(x.flatten(0, 1)).view(B, K, -1).cpu()
        adjacent = (emb[:, 1:] * emb[:, :-1]).sum(-1).mean(1)
        anchor = (emb[:, 1:] * emb[:, :1]).sum(-1).mean(1)
        scores = (1 - self.anchor_weight) * adjacent + self.anchor_weight * anchor
        return RewardOutput(scores, {"adjacent": adjacent, "anchor": anchor})


class PerFrame:
    """An image reward on ``frames`` sampled frames (``how``: uniform, first, all),
    aggregated per clip with ``aggregate``. Components: the image reward's own,
    aggregated the same way."""

    modality = "video"

    def __init__(
        self,
        reward: Mapping[str, Any],
        frames: int = 4,
        how: str = "uniform",
        aggregate: str = "mean",
    ):
        from alignflow.sdk.components import builder
        from alignflow.sdk.config import split_component

        if aggregate not in AGGREGATIONS:
            raise ConfigError("reward.aggregate", aggregate, f"one of {AGGREGATIONS}")
        if how not in ("uniform", "first", "all"):
            raise ConfigError("reward.how", how, "'uniform', 'first' or 'all'")
        name, args = split_component(dict(reward), "reward.reward")
        args.pop("weight", None)
        self.inner = builder("reward", name, "reward.reward.name")(**args)
        if getattr(self.inner, "modality", None) != "image":
            raise ConfigError("reward.reward.name", name, "an image reward (modality 'image')")
        self.name, self.frames, self.how, self.aggregate = name, frames, how, aggregate

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:  # [B, K] -> [B]
        if self.aggregate == "mean":
            return x.mean(1)
        if self.aggregate == "min":
            return x.min(1).values
        if self.aggregate == "median":
            return x.median(1).values
        return x[:, -1]

    def __call__(
        self, media: Video, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        video = _check(media, f"per_frame({self.name})")
        idx = sample_frames(video.num_frames, self.frames, self.how)
        B, K = len(video), len(idx)
        images = video.frames[:, idx].flatten(0, 1)
        out = check_output(
            self.inner(
                images, [p for p in prompts for _ in idx], [m for m in metadata for _ in idx]
            ),
            B * K,
            self.name,
        )
        return RewardOutput(
            self._reduce(out.scores.view(B, K)),
            {k: self._reduce(v.view(B, K)) for k, v in out.components.items()},
        )
