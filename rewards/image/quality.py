"""Rewards that need no model: JPEG (in)compressibility and a no-reference quality score.

- **JPEG compressibility / incompressibility** (DDPO, arXiv 2305.13301; Flow-GRPO's
  ``jpeg_compressibility``): the size in kB of the image saved as JPEG at quality 95,
  negated for compressibility. Easy to game (a blurred or empty image compresses
  best): pair it with a quality term.
- **PIQE** (Venkatanath et al., NCC 2015, the MATLAB ``piqe`` algorithm as ported by
  ``pypiqe``): a blind quality score in [0, 100], 0 = best. The reward is
  ``1 - PIQE / 100`` (higher is better), usable as an anti-hacking companion of a
  reward that could be fooled by noise or artifacts. pypiqe declares the GUI build of
  OpenCV as a dependency but only needs ``cv2``, which ``opencv-python-headless``
  provides: install it with ``pip install --no-deps pypiqe`` (scripts/setup.sh does).
  PIQE works on 16x16 blocks; on images smaller than ~64 px it says little.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from alignflow.sdk.errors import ConfigError


def jpeg_kilobytes(media: torch.Tensor, quality: int = 95) -> torch.Tensor:
    from alignflow.modalities.frames import to_uint8

    sizes = []
    for image in to_uint8(media):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000)
    return torch.tensor(sizes)


class JPEGCompressibility:
    """-(JPEG size in kB): rewards images that compress well."""

    modality = "image"

    def __init__(self, quality: int = 95):
        self.quality = quality

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        return -jpeg_kilobytes(media, self.quality)


class JPEGIncompressibility(JPEGCompressibility):
    """+(JPEG size in kB): rewards detail (and noise)."""

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        return jpeg_kilobytes(media, self.quality)


class PIQEReward:
    """1 - PIQE / 100 per image (1 = no perceptible distortion)."""

    modality = "image"

    def __init__(self):
        try:
            from pypiqe import piqe
        except ImportError as e:
            raise ConfigError(
                "reward.name",
                "piqe",
                "pypiqe installed: pip install --no-deps pypiqe "
                "(it needs only cv2, from opencv-python-headless)",
            ) from e
        self._piqe = piqe

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        from alignflow.modalities.frames import to_uint8

        # pypiqe wants BGR
        scores = [1 - self._piqe(image[..., ::-1].copy())[0] / 100 for image in to_uint8(media)]
        return torch.tensor(scores, dtype=torch.float32)
