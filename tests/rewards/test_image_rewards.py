"""Image rewards with their real classes: tiny random CLIPs saved to disk and loaded
back through the rewards' own loading path; the OCR engines on rendered text."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from alignflow.rewards.image.clip import (
    AestheticHead,
    AestheticReward,
    CLIPScoreReward,
    PickScoreReward,
)
from alignflow.rewards.image.ocr import OCRReward, levenshtein, ocr_score
from alignflow.rewards.image.quality import JPEGCompressibility, JPEGIncompressibility, PIQEReward
from alignflow.sdk.errors import ConfigError
from tests.helpers import save_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 40, 40, generator=g)


PROMPTS = ["a cat", "a red car", "two dogs"]
META = [{}, {}, {}]


def test_pickscore_is_the_scaled_logit_of_the_cosine(tiny_clip):
    r = PickScoreReward(str(tiny_clip), device="cpu")
    x = images()
    s = r(x, PROMPTS, META)
    assert s.shape == (3,) and s.dtype == torch.float32
    img, txt = r.clip.images(x), r.clip.texts(PROMPTS)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    expected = r.clip.model.logit_scale.exp().item() * (img * txt).sum(-1) / 26
    torch.testing.assert_close(s, expected)
    # a sample's score does not depend on its batch
    torch.testing.assert_close(r(x[1:2], PROMPTS[1:2], META[1:2]), s[1:2], rtol=1e-5, atol=1e-6)


def test_clipscore_conventions(tiny_clip):
    x = images()
    cos = CLIPScoreReward(str(tiny_clip), device="cpu")(x, PROMPTS, META)
    assert cos.abs().max() <= 1
    hessel = CLIPScoreReward(str(tiny_clip), scale=2.5, clamp_negative=True, device="cpu")(
        x, PROMPTS, META
    )
    torch.testing.assert_close(hessel, 2.5 * cos.clamp_min(0))


def test_aesthetic_head_loads_from_safetensors_and_from_the_released_pth(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    head = AestheticHead(dim=12)
    save_file(head.state_dict(), tmp_path / "head.safetensors")
    torch.save(head.state_dict(), tmp_path / "head.pth")
    a = AestheticReward(str(tmp_path / "head.safetensors"), str(tiny_clip), device="cpu")
    b = AestheticReward(str(tmp_path / "head.pth"), str(tiny_clip), device="cpu")
    x = images()
    sa = a(x, PROMPTS, META)
    torch.testing.assert_close(sa, b(x, PROMPTS, META))
    torch.testing.assert_close(sa, head.eval()(a.clip.images(x)))
    assert sa.shape == (3,)


def test_clip_rewards_name_a_bad_path(tmp_path):
    with pytest.raises(ConfigError, match="reward.path = .*CLIPModel"):
        PickScoreReward(str(tmp_path))
    with pytest.raises(ConfigError, match="reward.head_path"):
        AestheticReward(str(tmp_path / "nope.pth"), str(tmp_path))


def render(text: str, size=(128, 32)) -> torch.Tensor:
    im = Image.new("RGB", size, "white")
    ImageDraw.Draw(im).text((4, 4), text, fill="black", font=ImageFont.load_default(size=22))
    return torch.tensor(np.array(im)).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("engine", ["rapidocr", "tesseract"])
def test_ocr_clean_beats_misspelled_beats_blank(engine):
    r = OCRReward(engine=engine)
    media = torch.stack([render("hello"), render("helo"), torch.ones(3, 32, 128)])
    prompts = ['a sign that says "hello"'] * 3
    out = r(media, prompts, [{}, {}, {}])
    clean, miss, blank = out.scores.tolist()
    assert clean == 1.0 and 0.5 <= miss < 1.0 and blank == 0.0
    assert out.components["exact"].tolist() == [1.0, 0.0, 0.0]


def test_ocr_likelihood_is_dense_and_reported_alongside_the_edit_score():
    media = torch.stack([render("hello"), render("helo"), render("world"), torch.ones(3, 32, 128)])
    prompts = ['a sign that says "hello"'] * 4
    out = OCRReward(scoring="likelihood", detect=False)(media, prompts, [{}] * 4)
    clean, miss, wrong, blank = out.scores.tolist()
    assert clean > 0.9 and clean > miss > wrong and max(wrong, blank) < 0.05
    assert torch.equal(out.scores, out.components["likelihood"])
    assert out.components["edit"].tolist()[0] == 1.0 and out.components["exact"].tolist() == [
        1.0,
        0.0,
        0.0,
        0.0,
    ]
    # the same images through the edit score: same texts, same components
    edit = OCRReward(detect=False)(media, prompts, [{}] * 4)
    assert torch.equal(edit.scores, out.components["edit"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scoring": "ctc"},
        {"scoring": "likelihood", "engine": "tesseract"},
        {"scoring": "likelihood", "detect": True},
    ],
)
def test_ocr_bad_scoring_names_the_field(kwargs):
    with pytest.raises(ConfigError, match="reward.scoring"):
        OCRReward(**kwargs)


def test_ocr_unpadded_lines_only_in_rapidocr_line_mode():
    with pytest.raises(ConfigError, match="reward.pad_lines"):
        OCRReward(engine="tesseract", pad_lines=False)


def test_ocr_target_from_metadata_and_not_applicable_without_one():
    r = OCRReward()
    out = r(
        torch.stack([render("cat"), render("cat")]),
        ["draw it", "no quotes here"],
        [{"target_text": "cat"}, {}],
    )
    assert out.scores[0] == 1.0 and math.isnan(out.scores[1])


def test_flow_grpo_ocr_formula():
    assert levenshtein("kitten", "sitting") == 3
    assert ocr_score("Hello World", "helloworld") == 1.0
    assert ocr_score("xxhelloxx", "hello") == 1.0  # containment counts
    assert ocr_score("helo", "hello") == pytest.approx(0.8)
    assert ocr_score("completely different", "ab") == 0.0  # distance capped at len(target)


def test_jpeg_rewards_rank_smooth_and_noisy_images():
    smooth = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    noisy = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    media = torch.cat([smooth, noisy])
    comp = JPEGCompressibility()(media, ["", ""], [{}, {}])
    incomp = JPEGIncompressibility()(media, ["", ""], [{}, {}])
    assert comp[0] > comp[1] and incomp[1] > incomp[0]
    torch.testing.assert_close(comp, -incomp)
    assert 0 < incomp[1] < 20  # kB for a 64x64 noise image at quality 95


def test_piqe_prefers_a_clean_photo_over_noisy_and_blurred_copies():
    from sklearn.datasets import load_sample_image  # a photo shipped inside scikit-learn

    photo = torch.tensor(load_sample_image("china.jpg")).permute(2, 0, 1).float()[None] / 255
    photo = torch.nn.functional.interpolate(photo, size=(128, 192), mode="area")
    noisy = (
        photo + 0.15 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(photo, 5, 1, 2)
    s = PIQEReward()(torch.cat([photo, noisy, blurred]), [""] * 3, [{}] * 3)
    assert s[0] > s[1] and s[0] > s[2], s
    assert s.dtype == torch.float32 and ((0 <= s) & (s <= 1)).all()
