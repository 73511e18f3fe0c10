"""Video rewards on synthetic clips: a smooth moving shape, the same shape jittering
around its path, the smooth clip flickering in brightness, and a frozen frame."""

import pytest
import torch

from alignflow.modalities.video import shapes
from alignflow.modalities.video.video import Video, sample_frames
from alignflow.rewards.video.flow import VideoFlowReward
from alignflow.rewards.video.frames import CLIPFrameConsistency, PerFrame
from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.rewards import WeightedSum
from tests.helpers import save_tiny_clip

KINDS = ("smooth", "jitter", "flicker", "frozen")


def clips(direction="right", color="red", shape="square", seed=0) -> Video:
    g = torch.Generator().manual_seed(seed)
    start = shapes.random_start(direction, g)
    smooth = shapes.render(color, shape, direction, start)
    jitter = torch.stack(
        [
            shapes.render(color, shape, direction, (start[0] + float(dx), start[1] + float(dy)))[f]
            for f, (dx, dy) in enumerate(torch.randn(8, 2, generator=g))
        ]
    )
    flicker = smooth.clone()
    flicker[1::2] = flicker[1::2] * 0.7
    frozen = smooth[:1].expand(8, -1, -1, -1)
    return Video(torch.stack([smooth, jitter, flicker, frozen]), shapes.FPS)


def ranks(scores: torch.Tensor) -> list[str]:
    return [KINDS[i] for i in scores.argsort(descending=True).tolist()]


@pytest.mark.parametrize("direction", list(shapes.DIRECTIONS))
@pytest.mark.parametrize("head", ["consistency", "smoothness"])
def test_temporal_heads_rank_the_smooth_clip_above_jitter_and_flicker(direction, head):
    out = VideoFlowReward(**{head: 1.0})(clips(direction), [""] * 4, [{}] * 4)
    assert out.scores[0] > out.scores[1] and out.scores[0] > out.scores[2], (head, out.scores)
    assert (
        set(out.components) >= {"consistency", "smoothness", "motion", "speed"}
        and "direction" not in out.components
    )


@pytest.mark.parametrize("direction", list(shapes.DIRECTIONS))
def test_direction_head_knows_where_the_shape_goes_and_gives_a_frozen_clip_nothing(direction):
    video = clips(direction, "blue", "circle")
    right = VideoFlowReward(direction=1.0)(video, [""] * 4, [{"direction": direction}] * 4)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
    wrong = VideoFlowReward(direction=1.0)(video, [""] * 4, [{"direction": opposite}] * 4)
    assert right.scores[0] > 0.9 and wrong.scores[0] < -0.9
    assert (
        right.components["accuracy"][:3].tolist() == [1.0, 1.0, 1.0]
        and right.components["accuracy"][3] == 0
    )
    assert abs(float(right.scores[3])) < 0.05 and right.components["motion"][3] < 0.01
    torch.testing.assert_close(
        right.components["speed"][0], torch.tensor(shapes.SPEED), atol=0.1, rtol=0
    )


def test_the_default_video_shapes_reward_ranks_smooth_first_and_frozen_not_first():
    from alignflow.sdk.config import compose

    cfg = compose("train", ["experiment=video_shapes"])
    spec = dict(cfg.reward["flow"])
    reward = VideoFlowReward(**{k: v for k, v in spec.items() if k not in ("name", "weight")})
    for direction in shapes.DIRECTIONS:
        order = ranks(reward(clips(direction), [""] * 4, [{"direction": direction}] * 4).scores)
        assert order[0] == "smooth" and order[-1] == "frozen", (direction, order)


def test_video_flow_bad_input_names_what_is_wrong():
    with pytest.raises(ConfigError, match="non-zero weight"):
        VideoFlowReward()
    with pytest.raises(ConfigError, match="reward.method = 'raft'"):
        VideoFlowReward(consistency=1.0, method="raft")
    with pytest.raises(RewardError, match="'direction' metadata column"):
        VideoFlowReward(direction=1.0)(clips(), [""] * 4, [{}] * 4)
    with pytest.raises(RewardError, match="direction='sideways'"):
        VideoFlowReward(direction=1.0)(clips(), [""] * 4, [{"direction": "sideways"}] * 4)
    with pytest.raises(RewardError, match="at least 3 frames"):
        VideoFlowReward(consistency=1.0)(Video(torch.rand(1, 2, 3, 16, 16)), [""], [{}])


def test_dis_flow_agrees_on_the_ranking():
    out = VideoFlowReward(consistency=1.0, smoothness=1.0, method="dis")(
        clips(), [""] * 4, [{}] * 4
    )
    assert out.scores[0] > out.scores[1] and out.scores[0] > out.scores[2]


def test_heads_become_separate_advantage_terms():
    reward = VideoFlowReward(direction=1.0, consistency=0.5)
    ws = WeightedSum({"flow": (reward, 2.0)})
    assert ws.advantage_terms() == {"flow/direction": 2.0, "flow/consistency": 1.0}
    out = ws(clips(), [""] * 4, [{"direction": "right"}] * 4)
    torch.testing.assert_close(
        out.scores, 2.0 * out.components["flow/direction"] + out.components["flow/consistency"]
    )
    one = WeightedSum({"flow": (VideoFlowReward(consistency=1.0), 1.0)})
    assert one.advantage_terms() == {"flow": 1.0}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_frame_consistency_ranks_smooth_above_jitter_and_flicker(tiny_clip):
    reward = CLIPFrameConsistency(str(tiny_clip), frames=8, device="cpu")
    out = reward(clips(), [""] * 4, [{}] * 4)
    assert out.scores[0] > out.scores[1] and out.scores[0] > out.scores[2], out.scores
    # frozen: why it needs a motion term
    torch.testing.assert_close(out.scores[3], torch.tensor(1.0))
    anchored = CLIPFrameConsistency(str(tiny_clip), frames=4, anchor_weight=0.5, device="cpu")(
        clips(), [""] * 4, [{}] * 4
    )
    torch.testing.assert_close(
        anchored.scores, 0.5 * anchored.components["adjacent"] + 0.5 * anchored.components["anchor"]
    )


def test_per_frame_lifts_an_image_reward_and_aggregates():
    video = clips()
    video.frames[0, -1] = 0.0  # the last frame of the smooth clip goes black
    spec = {"name": "jpeg_compressibility"}
    means = PerFrame(spec, frames=8, how="all", aggregate="mean")(video, [""] * 4, [{}] * 4).scores
    mins = PerFrame(spec, frames=8, how="all", aggregate="min")(video, [""] * 4, [{}] * 4).scores
    last = PerFrame(spec, frames=8, how="all", aggregate="last")(video, [""] * 4, [{}] * 4).scores
    assert (mins <= means + 1e-6).all() and last[0] > means[0]  # black compresses best
    assert sample_frames(8, 4) == [0, 2, 5, 7] and sample_frames(8, 3, "first") == [0, 1, 2]
    with pytest.raises(ConfigError, match="reward.aggregate = 'max'"):
        PerFrame(spec, aggregate="max")
    with pytest.raises(
        ConfigError, match="reward.reward.name = 'video_flow': expected an image reward"
    ):
        PerFrame({"name": "video_flow", "consistency": 1.0})
