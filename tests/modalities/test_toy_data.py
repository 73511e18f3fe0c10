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
