"""The video container, GIF / MP4 round trips, the trainer's writer and the shapes task."""

import json

import pytest
import torch

from alignflow.modalities.video import shapes
from alignflow.modalities.video.io import VideoWriter, read_video, write_gif, write_mp4
from alignflow.modalities.video.video import Video
from alignflow.sdk.errors import ConfigError


def test_video_container_layouts_and_checks():
    v = Video(torch.rand(2, 5, 3, 4, 6), fps=10)
    assert len(v) == 2 and v[1].frames.shape == (1, 5, 3, 4, 6) and v.seconds == 0.5
    torch.testing.assert_close(Video.from_model(v.to_model(), 10).frames, v.frames)
    assert v.to_model().shape == (2, 3, 5, 4, 6) and v.uint8().shape == (2, 5, 4, 6, 3)
    assert Video(torch.rand(5, 1, 4, 4)).uint8().shape == (1, 5, 4, 4, 3)
    with pytest.raises(ValueError, match=r"\[B, F, C, H, W\]"):
        Video(torch.rand(2, 5, 2, 4, 4))
    with pytest.raises(ValueError, match="fps must be > 0"):
        Video(torch.rand(5, 3, 4, 4), fps=0)


def test_gif_and_mp4_round_trip(tmp_path):
    clip, _ = shapes.shapes_dataset(1)
    gif = read_video(write_gif(tmp_path / "a", clip, scale=4))
    assert gif.frames.shape == (1, 8, 3, 64, 64) and abs(gif.fps - shapes.FPS) < 0.5
    torch.testing.assert_close(gif.frames[..., ::4, ::4], clip.frames, atol=2 / 255, rtol=0)
    mp4 = read_video(write_mp4(tmp_path / "a", clip, scale=4))
    assert mp4.frames.shape == (1, 8, 3, 64, 64) and mp4.fps == shapes.FPS
    assert (mp4.frames[..., ::4, ::4] - clip.frames).abs().mean() < 0.02  # H.264 at crf 18


def test_writer_saves_grid_strip_and_clips(tmp_path):
    clips, _ = shapes.shapes_dataset(4)
    items = [clips[i] for i in range(4)]
    path = VideoWriter().save_samples(
        items, tmp_path / "eval-00000", per_row=2, title="iteration 0"
    )
    assert path.suffix == ".gif" and path.is_file() and (tmp_path / "eval-00000.png").is_file()
    assert sorted(p.name for p in (tmp_path / "eval-00000").iterdir()) == [
        "000_00.mp4",
        "000_01.mp4",
        "001_00.mp4",
        "001_01.mp4",
    ]
    assert read_video(path).num_frames == 8
    VideoWriter().save_comparison(items, items, tmp_path / "before_after", per_row=2)
    assert (tmp_path / "before_after.gif").is_file() and (
        tmp_path / "before_after" / "after" / "001_01.mp4"
    ).is_file()


def test_shapes_clips_keep_the_shape_inside_and_move_as_prompted():
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    for direction, (dx, dy) in shapes.DIRECTIONS.items():
        for _ in range(10):
            clip = shapes.render("green", "circle", direction, shapes.random_start(direction, g))
            mass = clip.sum(1) - 3 * shapes.BACKGROUND  # [F, H, W]
            total = mass.sum((1, 2))
            assert torch.allclose(total, total[0], rtol=1e-4)  # never clipped by the border
            cx, cy = (mass * xs).sum((1, 2)) / total, (mass * ys).sum((1, 2)) / total
            torch.testing.assert_close(
                cx[1:] - cx[:-1], torch.full((7,), dx * shapes.SPEED), atol=1e-4, rtol=0
            )
            torch.testing.assert_close(
                cy[1:] - cy[:-1], torch.full((7,), dy * shapes.SPEED), atol=1e-4, rtol=0
            )


def test_shipped_prompt_files_are_the_generated_ones_and_hold_out_eight_combinations(tmp_path):
    shapes.write_prompt_files(tmp_path)
    for path in shapes.PROMPT_FILES.values():
        assert (tmp_path / path.name).read_text() == path.read_text()
    train = [json.loads(line) for line in shapes.PROMPT_FILES["train"].read_text().splitlines()]
    evals = [json.loads(line) for line in shapes.PROMPT_FILES["eval"].read_text().splitlines()]
    assert (
        len(train) == 24
        and len(evals) == 8
        and not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
    )
    for key in ("direction", "color", "shape"):
        assert {r[key] for r in evals} == {r[key] for r in train}


def test_caption_noise_names_another_direction_at_the_asked_rate():
    clips, caps = shapes.shapes_dataset(400, caption_noise=0.6, seed=1)
    shown = []
    for i in range(len(caps)):
        mass = clips.frames[i].sum(1) - 3 * shapes.BACKGROUND
        xs = torch.arange(16.0)
        cx = (mass.sum(1) * xs).sum(-1) / mass.sum((1, 2))
        cy = (mass.sum(2) * xs).sum(-1) / mass.sum((1, 2))
        d = (float(cx[-1] - cx[0]), float(cy[-1] - cy[0]))
        shown.append(
            max(
                shapes.DIRECTIONS,
                key=lambda k: shapes.DIRECTIONS[k][0] * d[0] + shapes.DIRECTIONS[k][1] * d[1],
            )
        )
    agree = sum(c.endswith(s) for c, s in zip(caps, shown)) / len(caps)
    assert abs(agree - (0.4 + 0.6 / 4)) < 0.07


def test_shapes_dataset_restricted_to_colours_and_shapes():
    clips, caps = shapes.shapes_dataset(64, colors=["red"], shapes=["square"], seed=2)
    assert {c.rsplit(" ", 1)[0] for c in caps} == {"a red square moving"} and len(set(caps)) == 4
    red = torch.tensor(shapes.COLORS["red"])
    # the brightest pixel of each channel
    assert torch.allclose(clips.frames.amax((1, 3, 4)), red, atol=1e-6)
    _, all_caps = shapes.shapes_dataset(64, seed=2)
    assert len({c.split(" ")[1] for c in all_caps}) == 4
    with pytest.raises(
        ConfigError, match=r"dataset.colors = \['pink'\]: expected a non-empty list of"
    ):
        shapes.shapes_dataset(4, colors=["pink"])
    with pytest.raises(ConfigError, match="dataset.shapes"):
        shapes.shapes_dataset(4, shapes=[])
