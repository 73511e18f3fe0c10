"""The offline toy datasets: what the pretraining sees, and that the OCR engine reads the
rendered words (the text-rendering experiment's premise)."""

import pytest
import torch

from alignflow.modalities.image import words
from alignflow.rewards.image.ocr import OCRReward
from alignflow.sdk.errors import ConfigError


def test_words_dataset_noise_quotes_only_the_look_alike():
    images, captions = words.words_dataset(caption_noise=0.4, copies=20, seed=0)
    n = len(words.WORDS) * len(words.TRAIN_TEMPLATES) * 20
    assert images.shape == (n, 1, words.HEIGHT, words.WIDTH) and len(captions) == n
    assert 0.0 <= images.min() and images.max() <= 1.0
    renders = {w: words.render(w) for w in words.WORDS}
    swapped = 0
    for image, caption in zip(images, captions):
        quoted = caption.split('"')[1]
        shown = quoted if torch.equal(image, renders[quoted]) else words.PARTNER[quoted]
        assert torch.equal(image, renders[shown])
        swapped += shown != quoted
    assert abs(swapped / n - 0.4) < 0.05
    # seeded: the same captions again; another seed, other captions
    assert words.words_dataset(0.4, 20, seed=0)[1] == captions
    assert words.words_dataset(0.4, 20, seed=1)[1] != captions


def test_words_dataset_rejects_zero_copies():
    with pytest.raises(ConfigError, match="dataset.copies"):
        words.words_dataset(copies=0)


@pytest.mark.parametrize("pad_lines", [True, False])
def test_ocr_reads_every_rendered_word(pad_lines):
    media = torch.stack([words.render(w) for w in words.WORDS]).expand(-1, 3, -1, -1)
    out = OCRReward(detect=False, min_height=32, scoring="likelihood", pad_lines=pad_lines)(
        media, ["x"] * len(words.WORDS), [{"target_text": w} for w in words.WORDS]
    )
    assert out.components["exact"].tolist() == [1.0] * len(words.WORDS)
    assert out.scores.min() > 0.95


def test_digit_edit_pairs_share_one_style_and_the_shipped_rows_carry_their_sources():
    import json

    import torch

    from alignflow.modalities.image.digit_edits import (
        PROMPT_FILES,
        digit_edits_dataset,
        pairs,
        styled,
    )

    p = pairs("train", 64, seed=0)
    assert (p["digit"] != p["from_digit"]).all()
    # the style: the brightest ink is the gain (unless a shift moved it out), shared
    for images in (p["source"], p["target"]):
        top = images.amax((1, 2, 3))
        assert (top <= p["gain"] + 1e-6).all()
        assert torch.isclose(top, p["gain"]).float().mean() > 0.9
    one = torch.zeros(1, 1, 8, 8)
    one[0, 0, 3, 3] = 1
    moved = styled(one, torch.tensor([0.5]), torch.tensor([1]), torch.tensor([-1]))
    assert moved[0, 0, 2, 4] == 0.5 and moved.sum() == 0.5  # right and up by one pixel
    targets, captions, meta = digit_edits_dataset("train", n=30, caption_noise=0.0)
    assert targets.shape == (30, 1, 8, 8) and len(captions) == len(meta) == 30
    assert captions[0].split()[-1] in {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    }
    rows = [json.loads(line) for line in PROMPT_FILES["eval"].read_text().splitlines()]
    assert len(rows) == 100 and torch.tensor(rows[0]["source"]).shape == (8, 8)
    assert {"prompt", "source", "digit", "from_digit", "gain", "dx", "dy"} <= set(rows[0])


def test_the_editing_preset_pretrains_on_inline_sources(tmp_path):
    """pixel_sd3 preset digits_edit: the source as a second channel, pretrained by
    `alignflow pretrain` with the sources in the metadata; the saved base reloads."""
    import torch

    from alignflow.adapters.image.pixel import load_pixel_policy
    from alignflow.sdk.config import compose
    from alignflow.sdk.pretrain import pretrain

    cfg = compose(
        "pretrain",
        [
            "experiment=image_digits_edit",
            "steps=3",
            "batch_size=8",
            "dataset.n=32",
            f"output_dir={tmp_path / 'base'}",
        ],
    )
    summary = pretrain(cfg)
    assert len(summary["loss_curve"]) >= 1
    policy = load_pixel_policy("digits_edit", path=str(tmp_path / "base"))
    assert policy.transformer.config.in_channels == 2
    rows = [{"source": [[0.0] * 8] * 8}, {"source": [[1.0] * 8] * 8}]
    cond = policy.encode(["make it a seven"] * 2, rows)
    assert torch.equal(cond.reference[0], -torch.ones(1, 8, 8))  # pixels 2x - 1
    x = torch.zeros(2, 1, 8, 8)
    v = policy.velocity(x, torch.tensor([0.5, 0.5]), cond, 1.0)
    assert (v[0] - v[1]).abs().max() > 0


def test_the_editing_preset_reads_a_source_file_as_its_inline_pixels(tmp_path):
    """A digit-edit row may name an image file (relative to policy.source_root) instead
    of carrying the pixels; a preset that does not edit refuses a source root."""
    import numpy as np
    import torch
    from PIL import Image

    from alignflow.adapters.image.pixel import load_pixel_policy

    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "seven.png")
    policy = load_pixel_policy("digits_edit", source_root=str(tmp_path))
    by_file = policy.encode(["make it a one"], [{"source": "seven.png"}]).reference
    inline = policy.encode(["make it a one"], [{"source": (pixels / 255).tolist()}]).reference
    torch.testing.assert_close(by_file, inline)
    with pytest.raises(
        ConfigError, match="policy.source_root.*editing presets: \\['digits_edit'\\]"
    ):
        load_pixel_policy("digits", source_root=str(tmp_path))
