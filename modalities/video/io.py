"""Writing video: GIF and MP4 files, animated sample grids, film strips to print.

GIFs (Pillow) play everywhere, docs included; MP4 (PyAV, H.264) is what people share.
The trainer's writer saves an animated grid (rows: prompts, columns: seeds) and a PNG
film strip of the same clips, frames left to right, for a glance without playing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alignflow.modalities.frames import label, make_grid, scale_for, title_lines
from alignflow.modalities.video.video import Video


def _scale(video: Video) -> int:
    return scale_for(video.frames[0])  # small clips are blown up to ~64 px, like images


def _frames(video: Video, scale: int) -> list[Image.Image]:
    """The first clip of ``video`` as PIL frames, upscaled ``scale`` times (nearest)."""
    arr = video.uint8()[0].numpy()
    return [
        Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
        for f in arr
    ]


def write_gif(path: str | Path, video: Video, scale: int = 0) -> Path:
    """One clip as a looping GIF at its frame rate (``scale`` 0: small clips upscaled to ~64 px)."""
    return _save_animation(
        _frames(video, scale or _scale(video)), Path(path).with_suffix(".gif"), video.fps
    )


def write_mp4(path: str | Path, video: Video, scale: int = 0, crf: int = 18) -> Path:
    """One clip as H.264 MP4 (yuv420p: sides rounded up to even numbers)."""
    import av

    path = Path(path).with_suffix(".mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.asarray(f) for f in _frames(video, scale or _scale(video))]
    h, w = frames[0].shape[:2]
    H, W = h + h % 2, w + w % 2
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=round(video.fps))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf)}
        for f in frames:
            f = np.pad(f, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return path


def read_video(path: str | Path) -> Video:
    """A GIF or MP4 back as a Video (RGB), at the file's frame rate."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        img = Image.open(path)
        frames, durations = [], []
        for i in range(img.n_frames):
            img.seek(i)
            frames.append(np.asarray(img.convert("RGB")))
            durations.append(img.info.get("duration", 125))
        fps = 1000 / float(np.mean(durations))
    else:
        import av

        with av.open(str(path)) as f:
            stream = f.streams.video[0]
            fps = float(stream.average_rate or 8)
            frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(stream)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    return Video(x, fps)


def grid_frames(clips: Sequence[Video], per_row: int) -> list[Image.Image]:
    """One grid image per time step: clip i at row i // per_row, column i % per_row."""
    scale = _scale(clips[0])
    F = min(c.num_frames for c in clips)
    return [
        make_grid(torch.stack([c.frames[0, t] for c in clips]), per_row, scale) for t in range(F)
    ]


def film_strip(clips: Sequence[Video], max_rows: int = 16) -> Image.Image:
    """A still: one row per clip (up to ``max_rows``), its frames left to right."""
    clips = list(clips)[:max_rows]
    scale = _scale(clips[0])
    F = min(c.num_frames for c in clips)
    return make_grid(torch.cat([c.frames[0, :F] for c in clips]), F, scale)


def _save_animation(frames: list[Image.Image], path: Path, fps: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
    )
    return path


class VideoWriter:
    """The trainer's media writer for video: ``<path>.gif`` (the animated grid),
    ``<path>.png`` (film strips) and ``<path>/<prompt>_<sample>.mp4`` per clip."""

    suffix = ".gif"

    def __init__(self, mp4: bool = True):
        self.mp4 = mp4

    def _clips(self, media: Sequence[Video], path: Path, per_row: int) -> None:
        if self.mp4:
            for i, clip in enumerate(media):
                write_mp4(path / f"{i // per_row:03d}_{i % per_row:02d}.mp4", clip)

    def save_item(self, item: Video, path: Path) -> Path:
        """One clip as a looping GIF (plays in any browser, no codec needed)."""
        return write_gif(path, item)

    def save_samples(
        self, media: Sequence[Video], path: Path, per_row: int, title: str = ""
    ) -> Path:
        path = Path(path)
        self._clips(media, path, per_row)
        film_strip(media).save(path.with_suffix(".png"))
        frames = [label(f, title) if title else f for f in grid_frames(media, per_row)]
        return _save_animation(frames, path.with_suffix(self.suffix), media[0].fps)

    def save_comparison(
        self,
        before: Sequence[Video],
        after: Sequence[Video],
        path: Path,
        per_row: int,
        titles: Sequence[str] = ("before", "after"),
    ) -> Path:
        path = Path(path)
        for name, items in (("before", before), ("after", after)):
            self._clips(items, path / name, per_row)
        frames = []
        for left, right in zip(grid_frames(before, per_row), grid_frames(after, per_row)):
            lines = max(len(title_lines(t, g.width)) for t, g in zip(titles, (left, right)))
            left, right = label(left, titles[0], lines), label(right, titles[1], lines)
            canvas = Image.new(
                "RGB",
                (left.width + right.width + 12, max(left.height, right.height)),
                (255, 255, 255),
            )
            canvas.paste(left, (0, 0))
            canvas.paste(right, (left.width + 12, 0))
            frames.append(canvas)
        strips = [film_strip(before), film_strip(after)]
        still = Image.new(
            "RGB",
            (strips[0].width + strips[1].width + 12, max(s.height for s in strips)),
            (255, 255, 255),
        )
        still.paste(strips[0], (0, 0))
        still.paste(strips[1], (strips[0].width + 12, 0))
        still.save(path.with_suffix(".png"))
        return _save_animation(frames, path.with_suffix(self.suffix), before[0].fps)
