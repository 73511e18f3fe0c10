"""The built-in offline text-rendering task: three-letter words in 16x40 images.

Each word is drawn once, in bold white on black with Pillow's bundled font (no
download): a tiny pixel-space model draws a few crisp images, not a blur of many.
Prompts quote the word ('a sign that says "fox"') and carry it as a ``target_text``
column for the OCR reward. The OCR engine reads these renders (rapidocr, recognition
only, after a bicubic upscale to 32 px high: all 12 renders).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

PAIRS = (
    ("cat", "hat"),
    ("box", "fox"),
    ("sun", "bun"),
    ("red", "bed"),
    ("map", "cap"),
    ("dog", "log"),
)
WORDS = tuple(w for pair in PAIRS for w in pair)
PARTNER = {a: b for pair in PAIRS for a, b in (pair, pair[::-1])}
TRAIN_TEMPLATES = ('a sign that says "{}"', 'the word "{}"', 'text that reads "{}"')
EVAL_TEMPLATES = ('a sign that says "{}"',)
HEIGHT, WIDTH = 16, 40
FONT_SIZES, X_OFFSETS, Y_OFFSETS = (14,), (4,), (-1,)
DATA_DIR = Path(__file__).parent / "data"
PROMPT_FILES = {"train": DATA_DIR / "words_train.jsonl", "eval": DATA_DIR / "words_eval.jsonl"}


def render(word: str, font_size: int = 14, dx: int = 4, dy: int = -1) -> torch.Tensor:
    """[1, 16, 40] float in [0, 1]: ``word`` in bold white on black (1 px stroke: thick
    strokes survive a tiny model's sampling errors, and OCR reads them)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(image).text(
        (dx, dy),
        word,
        fill=255,
        font=ImageFont.load_default(size=font_size),
        stroke_width=1,
        stroke_fill=255,
    )
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def vocabulary() -> list[str]:
    """Every token of the prompts, quotes included (the toy tokenizer's vocabulary)."""
    tokens = {
        t
        for tpl in TRAIN_TEMPLATES + EVAL_TEMPLATES
        for t in tpl.replace('"', ' " ').format("").split()
    }
    return sorted(tokens | set(WORDS))


def prompt_rows(templates=TRAIN_TEMPLATES) -> list[dict]:
    return [{"prompt": t.format(w), "target_text": w} for t in templates for w in WORDS]


def write_prompt_files(folder: Path = DATA_DIR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, templates in (("train", TRAIN_TEMPLATES), ("eval", EVAL_TEMPLATES)):
        with open(folder / f"words_{name}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in prompt_rows(templates))


def words_dataset(
    caption_noise: float = 0.0, copies: int = 20, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """(images [N, 1, 16, 40], captions): every word ``copies`` times per training
    template. A fraction ``caption_noise`` of the captions quote the word's look-alike
    partner instead ("hat" under a picture of "cat": noisy alt-text), drawn independently
    per copy, so the base draws the quoted word or its partner, and prompt following is
    left for RL to fix."""
    from alignflow.sdk.errors import ConfigError
    from alignflow.sdk.random import generator

    if copies < 1:
        raise ConfigError("dataset.copies", copies, "an integer >= 1")
    renders = [
        (w, render(w, s, x, y))
        for w in WORDS
        for s in FONT_SIZES
        for x in X_OFFSETS
        for y in Y_OFFSETS
    ]
    g = generator(seed, "caption_noise")
    images, captions = [], []
    for template in TRAIN_TEMPLATES:
        for word, image in renders * copies:
            shown = PARTNER[word] if torch.rand((), generator=g) < caption_noise else word
            images.append(image)
            captions.append(template.format(shown))
    return torch.stack(images), captions
