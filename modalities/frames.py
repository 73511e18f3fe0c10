"""Frames to pictures, for every modality that shows frames (images, video): uint8
conversion, grids with a border, a title strip, and the upscaling of tiny frames."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
    """[B, C, H, W] in [0, 1] (or B images [C, H, W]) -> uint8 [B, H, W, 3]."""
    if not isinstance(images, torch.Tensor):
        images = torch.stack(list(images))
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images: expected [B, 1 or 3, H, W], got {tuple(images.shape)}")
    x = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, ncol: int, scale: int = 1, pad: int = 2) -> Image.Image:
    """Tile B images in rows of ``ncol``, each upscaled ``scale`` times (nearest)."""
    arr = to_uint8(images)
    B, H, W, _ = arr.shape
    h, w = H * scale, W * scale
    nrow = (B + ncol - 1) // ncol
    canvas = Image.new("RGB", (ncol * (w + pad) + pad, nrow * (h + pad) + pad), (255, 255, 255))
    for b in range(B):
        tile = Image.fromarray(arr[b]).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (pad + (b % ncol) * (w + pad), pad + (b // ncol) * (h + pad)))
    return canvas


LINE = 11  # pixels per line of the default font


def title_lines(text: str, width: int) -> list[str]:
    """``text`` wrapped to a strip ``width`` pixels wide (the default font is ~6 px a
    character)."""
    return textwrap.wrap(text, max(8, (width - 8) // 6)) or [""]


def label(img: Image.Image, text: str, lines: int = 1) -> Image.Image:
    """``img`` under a title strip: ``text`` wrapped to the image's width, at least
    ``lines`` lines high (so that panels side by side keep their rows aligned)."""
    wrapped = title_lines(text, img.width)
    height = 3 + LINE * max(lines, len(wrapped))
    out = Image.new("RGB", (img.width, img.height + height), (255, 255, 255))
    out.paste(img, (0, height))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    for i, line in enumerate(wrapped):
        draw.text((4, 1 + LINE * i), line, fill=(0, 0, 0), font=font)
    return out


def scale_for(images: torch.Tensor | Sequence[torch.Tensor]) -> int:
    return max(1, 64 // max(images[0].shape[-2:]))  # small images are blown up to ~64 px
