"""The video container and the conventions every video adapter and reward shares.

A batch of clips is ``Video.frames`` [B, F, C, H, W], float32 in [0, 1], C = 3 (RGB) or
1, at ``fps`` frames per second. Latents of video models are [B, C, F, H, W] (Wan's
layout: channels before time); :meth:`Video.from_model` and :meth:`Video.to_model`
convert between that and [-1, 1] pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Video:
    """A batch of clips: ``frames`` [B, F, C, H, W] in [0, 1] at ``fps``. Indexing gives
    one clip as a batch of one."""

    frames: torch.Tensor
    fps: float = 8.0

    def __post_init__(self):
        if self.frames.dim() == 4:
            self.frames = self.frames[None]
        if self.frames.dim() != 5 or self.frames.shape[2] not in (1, 3):
            raise ValueError(
                f"Video.frames must be [B, F, C, H, W] (or [F, C, H, W]) with C = 1 or 3, "
                f"got shape {tuple(self.frames.shape)}"
            )
        if not self.fps > 0:
            raise ValueError(f"Video.fps must be > 0, got {self.fps}")
        self.frames = self.frames.float()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Video:
        return Video(self.frames[index][None], self.fps)

    def cpu(self) -> Video:
        return Video(self.frames.cpu(), self.fps)

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    @classmethod
    def from_model(cls, x: torch.Tensor, fps: float) -> Video:
        """[B, C, F, H, W] in [-1, 1] (a decoder's output) -> Video in [0, 1]."""
        return cls(((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4), fps)

    def to_model(self) -> torch.Tensor:
        """Video -> [B, C, F, H, W] in [-1, 1] (a video encoder's input)."""
        return (self.frames * 2 - 1).permute(0, 2, 1, 3, 4)

    def uint8(self) -> torch.Tensor:
        """[B, F, H, W, 3] uint8 (grey clips repeated to RGB): what writers and OpenCV take."""
        x = (self.frames.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[2] == 1:
            x = x.expand(-1, -1, 3, -1, -1)
        return x.permute(0, 1, 3, 4, 2).contiguous()


def sample_frames(num_frames: int, count: int, how: str = "uniform") -> list[int]:
    """Indices of ``count`` frames out of ``num_frames`` for a reward that scores frames:
    ``uniform`` (evenly spaced, first and last included), ``first`` (the first ``count``)
    or ``all``. Fewer frames than ``count`` gives them all."""
    if how == "all" or count >= num_frames:
        return list(range(num_frames))
    if count < 1:
        raise ValueError(f"sample_frames: count={count}, expected >= 1")
    if how == "first":
        return list(range(count))
    if how == "uniform":
        if count == 1:
            return [num_frames // 2]
        return [round(i * (num_frames - 1) / (count - 1)) for i in range(count)]
    raise ValueError(f"sample_frames: how={how!r}, expected 'uniform', 'first' or 'all'")
