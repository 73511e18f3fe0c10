"""The offline editing task: turn a handwritten digit into another, keeping its style.

Pairs from scikit-learn's digits (:mod:`alignflow.modalities.image.digits`): a source
of digit s and a target of another digit t, both drawn in one random *style*, an ink
gain in [0.5, 1] and a shift of up to one pixel each way (zero-padded). "Keep its
stroke and position" then has one right answer up to the target's handwriting: the
source's gain and shift. The instruction names t ("change this digit into a seven").

Prompt rows carry the source inline (its 8 x 8 pixels in [0, 1], so no image files
ship), ``digit`` = t (what the digit classifier checks), ``from_digit`` = s, and the
style (``gain``, ``dx``, ``dy``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignflow.modalities.image.digits import WORDS, load_digits

TRAIN_TEMPLATES = ("change this digit into a {}", "turn it into a {}", "make it a {}")
EVAL_TEMPLATES = ("change this digit into a {}",)
DATA_DIR = Path(__file__).parent / "data"
PROMPT_FILES = {
    "train": DATA_DIR / "digit_edits_train.jsonl",
    "eval": DATA_DIR / "digit_edits_eval.jsonl",
}
GAIN = (0.5, 1.0)


def vocabulary() -> list[str]:
    """Every word the instructions use (the toy tokenizer's vocabulary)."""
    words = {w for t in TRAIN_TEMPLATES + EVAL_TEMPLATES for w in t.format("").split()}
    return sorted(words | set(WORDS))


def styled(images: torch.Tensor, gain: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor):
    """``images`` [N, 1, 8, 8] with each one's ink gain and (dx, dy) pixel shift."""
    out = torch.zeros_like(images)
    for i in range(len(images)):
        x, y = int(dx[i]), int(dy[i])
        src = images[i, :, max(0, -y) : 8 - max(0, y), max(0, -x) : 8 - max(0, x)]
        out[i, :, max(0, y) : 8 - max(0, -y), max(0, x) : 8 - max(0, -x)] = src
    return out * gain.view(-1, 1, 1, 1)


def pairs(split: str = "train", n: int = 2000, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` (source, target) pairs of ``split``'s images (the digits' fixed split):
    sources and targets [n, 1, 8, 8], their digits and the shared style."""
    from alignflow.sdk.random import generator

    images, labels = load_digits(split)
    g = generator(seed, "digit_edits", split)
    by_digit = [torch.nonzero(labels == d).flatten() for d in range(10)]
    src_digit = torch.randint(0, 10, (n,), generator=g)
    tgt_digit = (src_digit + torch.randint(1, 10, (n,), generator=g)) % 10  # another digit
    pick = lambda d: by_digit[d][torch.randint(0, len(by_digit[d]), (1,), generator=g)]  # noqa: E731
    src = torch.cat([pick(int(d)) for d in src_digit])
    tgt = torch.cat([pick(int(d)) for d in tgt_digit])
    gain = GAIN[0] + (GAIN[1] - GAIN[0]) * torch.rand(n, generator=g)
    dx, dy = torch.randint(-1, 2, (n,), generator=g), torch.randint(-1, 2, (n,), generator=g)
    return {
        "source": styled(images[src], gain, dx, dy),
        "target": styled(images[tgt], gain, dx, dy),
        "from_digit": src_digit,
        "digit": tgt_digit,
        "gain": gain,
        "dx": dx,
        "dy": dy,
    }


def rows(p: dict[str, torch.Tensor], templates: tuple[str, ...]) -> list[dict]:
    """Prompt rows of pairs ``p`` (the instruction's template cycles)."""
    out = []
    for i in range(len(p["digit"])):
        digit = int(p["digit"][i])
        out.append(
            {
                "prompt": templates[i % len(templates)].format(WORDS[digit]),
                "source": [[round(float(v), 4) for v in row] for row in p["source"][i, 0]],
                "digit": digit,
                "from_digit": int(p["from_digit"][i]),
                "gain": round(float(p["gain"][i]), 4),
                "dx": int(p["dx"][i]),
                "dy": int(p["dy"][i]),
            }
        )
    return out


def write_prompt_files(folder: Path = DATA_DIR) -> None:
    """(Re)write the shipped prompt files: 200 training and 100 held-out edits, whose
    sources come from the digits' training and test images respectively."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, split, n, templates in (
        ("train", "train", 200, TRAIN_TEMPLATES),
        ("eval", "test", 100, EVAL_TEMPLATES),
    ):
        with open(folder / f"digit_edits_{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows(pairs(split, n, seed=1), templates))


def digit_edits_dataset(
    split: str = "train", n: int = 6000, caption_noise: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, list[str], list[dict]]:
    """(targets [n, 1, 8, 8], instructions, metadata with the inline sources) for
    flow-matching pretraining of an editing policy. With ``caption_noise`` = q, a
    fraction q of the instructions name a random other digit than the target's, so that
    the base follows instructions only partly and RL has something to fix."""
    from alignflow.sdk.random import generator

    p = pairs(split, n, seed)
    g = generator(seed, "digit_edits_caption_noise")
    noisy = torch.rand(n, generator=g) < caption_noise
    named = torch.where(noisy, torch.randint(0, 10, (n,), generator=g), p["digit"])
    captions = [
        TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)].format(WORDS[int(d)]) for i, d in enumerate(named)
    ]
    metadata = [{"source": p["source"][i]} for i in range(n)]
    return p["target"], captions, metadata
