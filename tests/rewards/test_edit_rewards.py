"""Edit rewards: consistency to the source outside the edit (pixels, and a real CLIP
architecture at tiny size), and their combination with an instruction reward that
neither returning the source unchanged nor ignoring it can game."""

import numpy as np
import pytest
import torch
from PIL import Image

from alignflow.rewards.image.edit import EditReward, SourceConsistency
from alignflow.sdk.components import component
from alignflow.sdk.errors import ConfigError, DataError, RewardError


@component("reward")
class RedSquare:
    """The instruction "paint the masked square red": how red the mask's pixels are."""

    modality = "image"

    def __call__(self, media, prompts, metadata):
        red = (media[:, 0] - media[:, 1:].mean(1)).clamp(0, 1)  # [B, H, W]
        square = torch.zeros_like(red)
        square[:, 8:24, 8:24] = 1
        return (red * square).flatten(1).sum(1) / square.flatten(1).sum(1)


@pytest.fixture(scope="module")
def edit(tmp_path_factory):
    """A 32 x 32 photo-like source, the mask of its centre square, and three outputs:
    the honest edit (the square painted red, the rest kept), the source returned
    unchanged, and a red image that ignores the source."""
    root = tmp_path_factory.mktemp("edit")
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(4, 4, 3)).repeat(8, 0).repeat(8, 1) * 0.15 + 0.5
    pixels = (np.clip(smooth + rng.normal(size=(32, 32, 3)) * 0.05, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / "src.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(root / "mask.png")
    source = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    honest = source.clone()
    honest[:, 8:24, 8:24] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    ignored = torch.zeros_like(source)
    ignored[0] = 1
    media = torch.stack([honest, source, ignored])
    meta = [{"source": "src.png", "mask": "mask.png"}] * 3
    return root, media, meta


def test_pixel_consistency_counts_only_the_kept_pixels(edit):
    root, media, meta = edit
    scores = SourceConsistency(str(root))(media, ["paint it red"] * 3, meta)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)  # the square changed, nothing else
    assert scores[1] == pytest.approx(1.0, abs=1e-6)
    assert scores[2] < 0.6
    unmasked = SourceConsistency(str(root))(media[:1], ["x"], [{"source": "src.png"}])
    assert unmasked[0] < 0.9  # without a mask the painted square counts as a change


def test_clip_consistency_hides_the_editable_region(edit, tmp_path):
    from tests.helpers import save_tiny_clip

    root, media, meta = edit
    clip = save_tiny_clip(tmp_path / "clip")
    scores = SourceConsistency(str(root), measure="clip", path=str(clip))(
        media, ["paint it red"] * 3, meta
    )
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] == pytest.approx(1.0, abs=1e-5)
    assert scores[2] < scores[0] - 1e-3
    with pytest.raises(ConfigError, match="reward.path = ''"):
        SourceConsistency(str(root), measure="clip")


def test_neither_exploit_pays(edit):
    """The honest edit scores highest; the source returned unchanged and the red image
    that ignores the source both score far less."""
    root, media, meta = edit
    reward = EditReward(
        {"name": "tests.rewards.test_edit_rewards:RedSquare"}, {"source_root": str(root)}
    )
    out = reward(media, ["paint the square red"] * 3, meta)
    honest, unchanged, ignored = out.scores.tolist()
    assert honest > 0.9 and unchanged < 0.1 and ignored < 0.6
    assert out.components["instruction"][2] == pytest.approx(1.0)  # what the exploit games
    assert out.components["consistency"][1] == pytest.approx(1.0)  # ... and the other one
    gain = out.components["instruction_gain"]
    assert gain[0] > 0.9 and gain[1] == pytest.approx(0.0, abs=1e-6)


CALLS: list[int] = []


@component("reward")
class CountingRedSquare(RedSquare):
    """RedSquare that records how many images each call scores."""

    def __call__(self, media, prompts, metadata):
        CALLS.append(len(media))
        return super().__call__(media, prompts, metadata)


def test_a_groups_source_is_scored_once(edit):
    """The instruction gain scores each unedited (prompt, source) once, not once per
    group member: a group of 3 edits of one source costs 3 + 1 instruction scores."""
    root, media, meta = edit
    reward = EditReward(
        {"name": "tests.rewards.test_edit_rewards:CountingRedSquare"}, {"source_root": str(root)}
    )
    CALLS.clear()
    prompts = ["paint the square red"] * 3 + ["paint it red"] * 3
    out = reward(torch.cat([media, media]), prompts, meta * 2)
    assert CALLS == [6, 2]  # the edits, then one source per prompt
    gain = out.components["instruction_gain"]
    torch.testing.assert_close(gain[:3], gain[3:])
    assert gain[1] == pytest.approx(0.0, abs=1e-6)


def test_bad_edit_inputs(edit):
    root, media, meta = edit
    with pytest.raises(ConfigError, match="reward.measure = 'ssim'"):
        SourceConsistency(str(root), measure="ssim")
    with pytest.raises(ConfigError, match="reward.instruction.name = 'nope'"):
        EditReward({"name": "nope"})
    with pytest.raises(DataError, match=r"missing or empty column\(s\) \['source'\]"):
        SourceConsistency(str(root))(media[:1], ["x"], [{}])
    with pytest.raises(DataError, match="source='gone.png': no file"):
        SourceConsistency(str(root))(media[:1], ["x"], [{"source": "gone.png"}])

    @component("reward", "tests.rewards.test_edit_rewards.TooBig")
    def too_big():
        return lambda media, prompts, metadata: torch.full((len(media),), 3.0)

    reward = EditReward(
        {"name": "tests.rewards.test_edit_rewards.TooBig"}, {"source_root": str(root)}
    )
    with pytest.raises(RewardError, match=r"scores must lie in \[0, 1\]; got 3..3"):
        reward(media, ["x"] * 3, meta)


def test_ink_consistency_keeps_the_style_of_digit_edits():
    """``measure: ink`` on the editing toy's pairs: a target drawn in its source's style
    (ink gain, shift) scores well above the same targets in other pairs' styles; a copy
    scores 1, a copy moved by two pixels or drawn at half the ink scores low."""
    from alignflow.modalities.image.digit_edits import pairs, styled

    p = pairs("test", 200, seed=3)
    meta = [{"source": p["source"][i]} for i in range(200)]  # inline sources
    reward = SourceConsistency(measure="ink")
    kept = reward(p["target"], ["x"] * 200, meta)
    mixed = reward(p["target"][torch.randperm(200)], ["x"] * 200, meta)
    assert kept.mean() > 0.55 and mixed.mean() < 0.25
    source = p["source"][:1]
    same = reward(source, ["x"], meta[:1])
    moved = styled(source, torch.ones(1), torch.tensor([2]), torch.tensor([0]))
    faint = source * 0.5
    assert same[0] == pytest.approx(1.0)
    assert reward(moved, ["x"], meta[:1])[0] < 0.2 and reward(faint, ["x"], meta[:1])[0] < 0.2
    # grayscale edits are compared with grayscale sources, channel for channel
    pixels = SourceConsistency()(faint, ["x"], meta[:1])
    assert pixels[0] == pytest.approx(1 - float((source * 0.5).mean()), abs=1e-4)
    with pytest.raises(ConfigError, match="reward.shift_tolerance = 0"):
        SourceConsistency(measure="ink", shift_tolerance=0)
