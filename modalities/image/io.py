"""Reading source images; writing images: PNG files, sample grids, before/after
comparisons (the grids and labels are modalities/frames.py's, shared with the video
writer)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from alignflow.modalities.frames import label, make_grid, scale_for, title_lines


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


def image_sources(size: tuple[int, int], root: str = "", mode: str = "RGB") -> Any:
    """The source images of edit prompts: each row's ``source`` (a path, relative ones
    against ``root``, or the image itself) as [C, H, W] in [0, 1] at ``size``, read once
    per file (:class:`~alignflow.modalities.sources.SourceMedia`)."""
    from alignflow.modalities.sources import SourceMedia

    return SourceMedia(
        "source",
        lambda path: read_image(path, size, mode),
        root,
        what="image edit prompt",
        inline=lambda value: image_from_value(value, size, mode),
    )


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
        sources: Sequence[torch.Tensor] | None = None,
        prompts: Sequence[str] | None = None,
        max_rows: int = 24,
    ) -> Path:
        """Base samples beside trained ones, one prompt a row (the first ``max_rows``;
        the titles say so, and the evaluation grids hold them all); for edits
        (``sources``: each row's source image, ``prompts``: its instruction) a first
        column shows the source and the instruction."""
        rows = -(-len(before) // per_row)
        if rows > max_rows:
            before, after = before[: max_rows * per_row], after[: max_rows * per_row]
            titles = [f"{t} (first {max_rows} of {rows} prompts)" for t in titles]
        scale = scale_for(before)
        grids = [make_grid(before, per_row, scale), make_grid(after, per_row, scale)]
        titles = list(titles[:2])
        if sources is not None:
            grids.insert(0, _source_column(sources[:max_rows], prompts, before[0], scale))
            titles.insert(0, "source, instruction")
        lines = max(len(title_lines(t, g.width)) for t, g in zip(titles, grids))
        panels = [label(g, t, lines) for g, t in zip(grids, titles)]
        canvas = Image.new(
            "RGB",
            (sum(p.width for p in panels) + 12 * (len(panels) - 1), max(p.height for p in panels)),
            (255, 255, 255),
        )
        x = 0
        for panel in panels:
            canvas.paste(panel, (x, 0))
            x += panel.width + 12
        path = Path(path).with_suffix(self.suffix)
        canvas.save(path)
        return path


def _source_column(
    sources: Sequence[torch.Tensor], prompts: Sequence[str] | None, like: torch.Tensor, scale: int
) -> Image.Image:
    """One row per prompt, aligned with the sample grids' rows: its source (at the
    samples' size and channels) and its instruction, wrapped beside it."""
    size = tuple(like.shape[-2:])
    tiles = torch.stack(
        [
            image_from_value(s.detach().float().cpu(), size, "L" if like.shape[0] == 1 else "RGB")
            for s in sources
        ]
    )
    grid = make_grid(tiles, 1, scale)
    if not prompts:
        return grid
    pitch, font = size[0] * scale + 2, ImageFont.load_default()
    width = 140
    out = Image.new("RGB", (grid.width + width, grid.height), (255, 255, 255))
    out.paste(grid, (0, 0))
    draw = ImageDraw.Draw(out)
    for row, text in enumerate(prompts[: len(sources)]):
        lines = textwrap.wrap(text, 22)[: max(1, (pitch - 2) // 11)]
        draw.multiline_text(
            (grid.width + 4, 2 + row * pitch),
            "\n".join(lines),
            fill=(0, 0, 0),
            font=font,
            spacing=1,
        )
    return out
