"""Optical-flow video rewards (OpenCV, offline): one flow computation, four heads.

For every clip, dense optical flow (Farneback or DIS) is computed on grey frames
(upscaled to at least 64 px, since the flow estimators need texture around a pixel)
between consecutive frames and between frames two apart. Then, per clip:

- ``consistency`` = 1 - E|warp(f_t -> f_{t+1}) - f_{t+1}| (RGB in [0, 1]): the frame
  warped along the flow should be the next frame (the warping error of video
  consistency metrics; flicker and popping raise it).
- ``smoothness`` = 1 - E|interp(f_{t-1}, f_{t+1}) - f_t|: the middle frame of a triple
  interpolated along the flow between its neighbours (jerky motion raises it).
- ``motion`` = min(1, speed / motion_target): speed is the mean flow magnitude of the
  ``top`` fraction of fastest pixels, in pixels per frame at the clip's resolution.
- ``direction`` = <d, u> / max(|d|, motion_target), in [-1, 1]: d is the mean flow of
  those fastest pixels, u the unit vector of the prompt's ``direction`` column
  (left, right, up, down, or [dx, dy] with y down). A frozen clip scores 0, not 1.

A frozen clip maximises consistency and smoothness: weigh them with ``motion`` or
``direction``. The score is sum_h weight_h * head_h over the heads with a weight; the
heads are components, and ``heads`` tells the trainer to give each its own group
advantage when the algorithm aggregates advantages (``aggregate: advantage``).
Also logged: ``accuracy`` (the arg-max of d over the four directions is the prompted
one and |d| >= motion_target / 2) and ``speed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from alignflow.modalities.video.video import Video
from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.rewards import RewardOutput

HEADS = ("direction", "consistency", "smoothness", "motion")
METHODS = ("farneback", "dis")
UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def direction_vector(value: Any) -> np.ndarray:
    """A ``direction`` metadata value -> unit (dx, dy), y down."""
    if isinstance(value, str) and value in UNIT:
        return np.array(UNIT[value])
    try:
        v = np.asarray(value, dtype=np.float64).reshape(2)
    except (TypeError, ValueError):
        v = np.zeros(2)
    n = float(np.hypot(*v))
    if not n > 0 or not math.isfinite(n):
        raise RewardError(
            f"video reward: direction={value!r}; expected one of {sorted(UNIT)} or [dx, dy] (y "
            "down)"
        )
    return v / n


class OpticalFlow:
    """Dense flow between two grey uint8 frames: ``flow(a, b)`` [H, W, 2] with
    a(p) ~ b(p + flow(p)) (OpenCV's convention)."""

    def __init__(self, method: str = "farneback"):
        if method not in METHODS:
            raise ConfigError("reward.method", method, f"one of {METHODS}")
        import cv2

        self.cv2, self.method = cv2, method
        self.dis = (
            cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            if method == "dis"
            else None
        )

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.dis is not None:
            return self.dis.calc(a, b, None)
        return self.cv2.calcOpticalFlowFarneback(
            a,
            b,
            None,
            pyr_scale=0.5,
            levels=3,
            winsize=9,
            iterations=3,
            poly_n=5,
            poly_sigma=1.1,
            flags=0,
        )

    def warp(self, image: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """image(p + flow(p)): backward warping, bilinear, borders replicated."""
        m = _pixel_grid(*flow.shape[:2]) + flow
        return self.cv2.remap(
            image, m[..., 0], m[..., 1], self.cv2.INTER_LINEAR, borderMode=self.cv2.BORDER_REPLICATE
        )


@lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int) -> np.ndarray:
    """[h, w, 2] float32 (x, y) coordinates of every pixel (read-only: shared between calls)."""
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    grid.flags.writeable = False
    return grid


def clip_heads(
    frames: np.ndarray, flow: OpticalFlow, top: float, min_side: int = 64
) -> dict[str, Any]:
    """The raw per-clip measurements of one clip ``frames`` [F, H, W, 3] float32 in [0, 1]:
    warp error, interpolation error, speed and mean motion vector (pixels per frame)."""
    cv2 = flow.cv2
    F_, H, W = frames.shape[:3]
    if F_ < 3:
        raise RewardError(f"video reward: clips need at least 3 frames for flow heads, got {F_}")
    scale = max(1, math.ceil(min_side / min(H, W)))
    big = np.stack(
        [cv2.resize(f, (W * scale, H * scale), interpolation=cv2.INTER_LINEAR) for f in frames]
    )
    grey = [
        np.ascontiguousarray((cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) * 255).round().astype(np.uint8))
        for f in big
    ]
    warp_err, vectors, speeds = [], [], []
    for t in range(F_ - 1):
        back = flow(grey[t + 1], grey[t])  # f_{t+1}(p) ~ f_t(p + back(p))
        warp_err.append(float(np.abs(flow.warp(big[t], back) - big[t + 1]).mean()))
        # where each pixel of f_{t+1} came from, reversed, in clip pixels
        motion = -back.reshape(-1, 2) / scale
        mag = np.hypot(motion[:, 0], motion[:, 1])
        k = max(1, int(round(top * len(mag))))
        fastest = np.argpartition(mag, -k)[-k:]
        speeds.append(float(mag[fastest].mean()))
        vectors.append(motion[fastest].mean(0))
    interp_err = []
    for t in range(1, F_ - 1):
        skip = flow(grey[t + 1], grey[t - 1])  # f_{t+1}(p) ~ f_{t-1}(p + skip(p))
        middle = 0.5 * (flow.warp(big[t - 1], 0.5 * skip) + flow.warp(big[t + 1], -0.5 * skip))
        interp_err.append(float(np.abs(middle - big[t]).mean()))
    return {
        "warp_error": float(np.mean(warp_err)),
        "interp_error": float(np.mean(interp_err)),
        "speed": float(np.mean(speeds)),
        "vector": np.mean(vectors, 0),
    }


class VideoFlowReward:
    """Optical-flow heads of a video clip, weighted (see the module docstring).

    Args:
        direction, consistency, smoothness, motion: the heads' weights; a head with
            weight 0 is not in the score (``direction`` needs the ``direction``
            metadata column and is only computed when weighted).
        method: ``farneback`` or ``dis`` (OpenCV's dense flows).
        motion_target: the speed, in pixels per frame, at which ``motion`` saturates
            and ``direction`` stops growing with speed.
        top: the fraction of fastest pixels whose flow measures speed and direction
            (about the area of the moving thing).
    """

    modality = "video"

    def __init__(
        self,
        direction: float = 0.0,
        consistency: float = 0.0,
        smoothness: float = 0.0,
        motion: float = 0.0,
        method: str = "farneback",
        motion_target: float = 0.5,
        top: float = 0.1,
    ):
        weights = {
            "direction": direction,
            "consistency": consistency,
            "smoothness": smoothness,
            "motion": motion,
        }
        if not any(weights.values()):
            raise ConfigError(
                "reward", weights, f"a non-zero weight for at least one head of {HEADS}"
            )
        if not motion_target > 0:
            raise ConfigError("reward.motion_target", motion_target, "pixels per frame > 0")
        if not 0 < top <= 1:
            raise ConfigError("reward.top", top, "a fraction in (0, 1]")
        self.heads = {h: float(w) for h, w in weights.items() if w}
        self.flow, self.motion_target, self.top = OpticalFlow(method), motion_target, top

    def __call__(
        self, media: Video, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        if not isinstance(media, Video):
            raise RewardError(f"video reward: expected a Video batch, got {type(media).__name__}")
        if "direction" in self.heads:
            missing = [i for i, m in enumerate(metadata) if "direction" not in m]
            if missing:
                raise RewardError(
                    f"video reward: the direction head needs a 'direction' metadata column; "
                    f"samples {missing[:8]} have none"
                )
        frames = media.frames.permute(0, 1, 3, 4, 2).cpu().numpy()  # [B, F, H, W, C]
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, -1)
        rows = [
            clip_heads(np.ascontiguousarray(f, dtype=np.float32), self.flow, self.top)
            for f in frames
        ]
        speed = torch.tensor([r["speed"] for r in rows])
        out = {
            "consistency": 1 - torch.tensor([r["warp_error"] for r in rows]),
            "smoothness": 1 - torch.tensor([r["interp_error"] for r in rows]),
            "motion": (speed / self.motion_target).clamp(max=1.0),
            "speed": speed,
        }
        if "direction" in self.heads:
            vec = np.stack([r["vector"] for r in rows])
            target = np.stack([direction_vector(m["direction"]) for m in metadata])
            norm = np.maximum(np.hypot(vec[:, 0], vec[:, 1]), self.motion_target)
            out["direction"] = torch.tensor((vec * target).sum(1) / norm, dtype=torch.float32)
            units = np.array(list(UNIT.values()))
            best = units[(vec @ units.T).argmax(1)]
            out["accuracy"] = torch.tensor(
                ((best * target).sum(1) > 0.99) & (np.hypot(*vec.T) >= self.motion_target / 2),
                dtype=torch.float32,
            )
        scores = sum(w * out[h] for h, w in self.heads.items())
        return RewardOutput(scores.float(), {k: v.float() for k, v in out.items()})
