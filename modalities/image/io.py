"""Reading source images; writing images: PNG files, sample grids, before/after
comparisons (the grids and labels are modalities/frames.py's, shared with the video
writer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from alignflow.modalities.frames import label, make_grid, scale_for


def read_image(path: Path, size: tuple[int, int] | None = None, mode: str = "RGB") -> torch.Tensor:
    """An image file as [C, H, W] in [0, 1] (``mode`` RGB: 3 channels, L: 1), resized to
    ``size`` (H, W) with Lanczos filtering when it differs (what diffusers' image
    processors do)."""
    with Image.open(path) as im:
        return _pixels(im, size, mode)


def image_from_value(
    value: Any, size: tuple[int, int] | None = None, mode: str = "RGB"
) -> torch.Tensor:
    """A source image given inline, as :func:`read_image` returns a file: a PIL image,
    or an array / nested list [H, W] or [C, H, W] with values in [0, 1]."""
    if isinstance(value, Image.Image):
        return _pixels(value, size, mode)
    x = torch.as_tensor(np.asarray(value, dtype=np.float32))
    x = x[None] if x.ndim == 2 else x
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"shape {tuple(x.shape)}, expected [H, W] or [C, H, W] with C 1 or 3")
    x = x.mean(0, keepdim=True) if mode == "L" else x.expand(3, -1, -1)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
    return x.clamp(0, 1).contiguous()


def _pixels(im: Image.Image, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    im = im.convert(mode)
    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    pixels = np.asarray(im, dtype=np.float32).reshape(im.height, im.width, -1) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class ImageWriter:
    """The trainer's media writer for images."""

    suffix = ".png"

    def save_item(self, item: torch.Tensor, path: Path) -> Path:
        """One sample [C, H, W] as a PNG (tiny images upscaled to ~64 px, as in grids)."""
        path = Path(path).with_suffix(self.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        make_grid(item[None], 1, scale_for(item[None]), pad=0).save(path)
        return path

    def save_samples(self, media: torch.Tensor, path: Path, per_row: int, title: str = "") -> Path:
        grid = make_grid(media, per_row, scale_for(media))
        path = Path(path).with_suffix(self.suffix)
        (label(grid, title) if title else grid).save(path)
        return path

    def save_comparison(
        self,
        before: torch.Tensor,
        after: torch.Tensor,
        path: Path,
        per_row: int,
        titles: Sequence[str] = ("before", "after"),
    ) -> Path:
        scale = scale_for(before)
        left = label(make_grid(before, per_row, scale), titles[0])
        right = label(make_grid(after, per_row, scale), titles[1])
        canvas = Image.new(
            "RGB", (left.width + right.width + 12, max(left.height, right.height)), (255, 255, 255)
        )
        canvas.paste(left, (0, 0))
        canvas.paste(right, (left.width + 12, 0))
        path = Path(path).with_suffix(self.suffix)
        canvas.save(path)
        return path
