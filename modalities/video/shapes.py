"""The built-in offline video task: a coloured shape moving in a prompted direction.

Clips of ``FRAMES`` frames of ``SIZE`` x ``SIZE`` RGB pixels: a red, green, blue or
yellow square or circle on a dark background, moving left, right, up or down by
``SPEED`` pixels a frame from a random start ("a red square moving left"). Shapes are
drawn with 4 x 4 supersampling, so sub-pixel positions are smooth. Prompt files carry
``direction``, ``color`` and ``shape`` columns, which reach the rewards as metadata.

Held out: the 8 (color, shape, direction) combinations with
(color + shape + direction) % 4 == 0 are the eval prompts; RL trains on the other 24.
Every direction, colour and shape appears in both splits. Pretraining sees all 32,
with noisy captions (:func:`shapes_dataset`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from alignflow.modalities.video.video import Video
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import generator

COLORS = {
    "red": (0.90, 0.15, 0.10),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES = ("square", "circle")
DIRECTIONS = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}  # (dx, dy), y down
BACKGROUND = 0.08
FRAMES, SIZE, SPEED, EXTENT, FPS = 8, 16, 1.0, 5.0, 8.0
DATA_DIR = Path(__file__).parent / "data"
PROMPT_FILES = {"train": DATA_DIR / "shapes_train.jsonl", "eval": DATA_DIR / "shapes_eval.jsonl"}


def caption(color: str, shape: str, direction: str) -> str:
    return f"a {color} {shape} moving {direction}"


def vocabulary() -> list[str]:
    """Every word the prompts use (the toy tokenizer's vocabulary)."""
    return sorted({"a", "moving", *COLORS, *SHAPES, *DIRECTIONS})


def render(
    color: str,
    shape: str,
    direction: str,
    start: tuple[float, float],
    frames: int = FRAMES,
    size: int = SIZE,
    speed: float = SPEED,
    extent: float = EXTENT,
) -> torch.Tensor:
    """One clip [F, 3, H, W] in [0, 1]: the shape's top-left corner at ``start`` (x, y)
    in pixels at frame 0, then ``speed`` pixels a frame towards ``direction``."""
    ss = 4  # supersampling
    coords = (torch.arange(size * ss, dtype=torch.float32) + 0.5) / ss
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = DIRECTIONS[direction]
    rgb = torch.tensor(COLORS[color]).view(3, 1, 1)
    out = []
    for f in range(frames):
        x0, y0 = start[0] + dx * speed * f, start[1] + dy * speed * f
        if shape == "square":
            inside = (x >= x0) & (x < x0 + extent) & (y >= y0) & (y < y0 + extent)
        else:
            r = extent / 2
            inside = (x - x0 - r) ** 2 + (y - y0 - r) ** 2 < r * r
        cover = torch.nn.functional.avg_pool2d(inside.float()[None, None], ss)[0]  # [1, H, W]
        out.append(BACKGROUND + cover * (rgb - BACKGROUND))
    return torch.stack(out)


def random_start(
    direction: str,
    g: torch.Generator,
    frames: int = FRAMES,
    size: int = SIZE,
    speed: float = SPEED,
    extent: float = EXTENT,
) -> tuple[float, float]:
    """A start from which the shape stays inside the frame for the whole clip."""
    travel = speed * (frames - 1)
    dx, dy = DIRECTIONS[direction]
    lo_x, hi_x = (travel if dx < 0 else 0.0), size - extent - (travel if dx > 0 else 0.0)
    lo_y, hi_y = (travel if dy < 0 else 0.0), size - extent - (travel if dy > 0 else 0.0)
    u = torch.rand(2, generator=g)
    return float(lo_x + u[0] * (hi_x - lo_x)), float(lo_y + u[1] * (hi_y - lo_y))


def combos() -> list[tuple[str, str, str]]:
    return [(c, s, d) for c in COLORS for s in SHAPES for d in DIRECTIONS]


def is_eval(color: str, shape: str, direction: str) -> bool:
    return (
        list(COLORS).index(color) + SHAPES.index(shape) + list(DIRECTIONS).index(direction)
    ) % 4 == 0


def prompt_rows(split: str) -> list[dict]:
    return [
        {"prompt": caption(c, s, d), "direction": d, "color": c, "shape": s}
        for c, s, d in combos()
        if is_eval(c, s, d) == (split == "eval")
    ]


def write_prompt_files(folder: Path = DATA_DIR) -> None:
    """(Re)write the shipped prompt files."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, path in PROMPT_FILES.items():
        with open(folder / path.name, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in prompt_rows(split))


def shapes_dataset(
    clips: int = 8192,
    caption_noise: float = 0.0,
    seed: int = 0,
    frames: int = FRAMES,
    size: int = SIZE,
    speed: float = SPEED,
    colors: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
) -> tuple[Video, list[str]]:
    """(Video [N, F, 3, H, W], captions) for flow-matching pretraining: ``clips`` clips
    of uniformly drawn (colour, shape, direction) and start.

    With ``caption_noise`` = q, a fraction q of the captions name a uniformly random
    direction instead of the one shown: a model pretrained on them moves the shape the
    prompted way about (1 - q) + q / 4 of the time, which leaves RL something to fix.
    ``colors`` / ``shapes`` restrict the draw (all by default), e.g. red squares only,
    where the direction is the one thing left to learn (the base's first stage)."""
    for name, chosen, known in (("colors", colors, list(COLORS)), ("shapes", shapes, list(SHAPES))):
        if chosen is not None and (not chosen or any(c not in known for c in chosen)):
            raise ConfigError(f"dataset.{name}", chosen, f"a non-empty list of {known}")
    g = generator(seed, "shapes")
    all_combos = [
        (c, s, d)
        for c, s, d in combos()
        if (colors is None or c in colors) and (shapes is None or s in shapes)
    ]
    names = list(DIRECTIONS)
    videos, caps = [], []
    for _ in range(clips):
        c, s, d = all_combos[int(torch.randint(len(all_combos), (), generator=g))]
        videos.append(render(c, s, d, random_start(d, g, frames, size, speed), frames, size, speed))
        said = (
            d
            if torch.rand((), generator=g) >= caption_noise
            else names[int(torch.randint(4, (), generator=g))]
        )
        caps.append(caption(c, s, said))
    return Video(torch.stack(videos), FPS), caps
