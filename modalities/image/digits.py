"""The built-in offline image task: scikit-learn's bundled handwritten digits.

1,797 grayscale 8x8 images of the digits 0-9 (``sklearn.datasets.load_digits``,
shipped inside scikit-learn: no download). Captions name the digit in words
("a handwritten digit seven"); prompt files carry the digit as a ``digit`` column,
which reaches the reward as metadata. A fixed stratified split keeps the images
the reward classifier is tested on away from pretraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = ("a handwritten digit {}", "the digit {}", "a picture of the number {}")
EVAL_TEMPLATES = ("a handwritten digit {}",)
DATA_DIR = Path(__file__).parent / "data"
PROMPT_FILES = {"train": DATA_DIR / "digits_train.jsonl", "eval": DATA_DIR / "digits_eval.jsonl"}


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 1, 8, 8] float32 in [0, 1] and labels [N] of a fixed 75/25 stratified
    split ("train", "test" or "all")."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    d = sk_load()
    images = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(d.target, dtype=torch.long)
    if split == "all":
        return images, labels
    idx_train, idx_test = train_test_split(
        range(len(labels)), test_size=0.25, random_state=0, stratify=d.target
    )
    if split not in ("train", "test"):
        raise ValueError(f"load_digits: split={split!r}, expected 'train', 'test' or 'all'")
    idx = torch.tensor(idx_train if split == "train" else idx_test)
    return images[idx], labels[idx]


def vocabulary() -> list[str]:
    """Every word the prompts use (the toy tokenizer's vocabulary)."""
    return sorted(
        {w for t in TRAIN_TEMPLATES + EVAL_TEMPLATES for w in t.format("").split()} | set(WORDS)
    )


def prompt_rows(templates=TRAIN_TEMPLATES) -> list[dict]:
    return [{"prompt": t.format(w), "digit": d} for t in templates for d, w in enumerate(WORDS)]


def write_prompt_files(folder: Path = DATA_DIR) -> None:
    """(Re)write the shipped prompt files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, templates in (("train", TRAIN_TEMPLATES), ("eval", EVAL_TEMPLATES)):
        with open(folder / f"digits_{name}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in prompt_rows(templates))


def digits_dataset(
    split: str = "train", caption_noise: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """(images [N, 1, 8, 8] in [0, 1], captions) for flow-matching pretraining: each
    image once per training template.

    With ``caption_noise`` = q, a fraction q of the captions name a uniformly random
    digit instead of the right one, like alt-text scraped from the web: a model
    pretrained on them draws good digits but follows the prompt only about
    (1 - q) + q / 10 of the time, which leaves RL something to fix."""
    from alignflow.sdk.random import generator

    images, labels = load_digits(split)
    labels = labels.repeat(len(TRAIN_TEMPLATES))
    g = generator(seed, "caption_noise")
    noisy = torch.rand(len(labels), generator=g) < caption_noise
    shown = torch.where(noisy, torch.randint(0, 10, (len(labels),), generator=g), labels)
    n = len(labels) // len(TRAIN_TEMPLATES)
    caps = [TRAIN_TEMPLATES[i // n].format(WORDS[int(d)]) for i, d in enumerate(shown)]
    return images.repeat(len(TRAIN_TEMPLATES), 1, 1, 1), caps
