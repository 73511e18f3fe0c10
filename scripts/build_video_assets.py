"""Regenerate what the offline video default (`experiment=video_shapes`) ships with.

    .venv/bin/python scripts/build_video_assets.py [--data] [--base]   (default: both)

--data (seconds): modalities/video/data/, the train/eval prompt files
  (modalities.video.shapes.write_prompt_files).
--base (about 30 minutes on 2 CPU cores): adapters/video/assets/shapes_base, four runs
  of `alignflow pretrain experiment=video_shapes` (flow matching of the tiny Wan
  transformer, each on 8192 freshly drawn clips), a curriculum (STAGES):
  1. red squares only, at pure noise only (sigma = 1), clean captions, 800 steps at a
     constant lr: the direction is the only thing left to learn, and after a plateau of
     about 700 steps the model places the square by the direction word;
  2. all 32 combinations, still at sigma = 1, 400 steps: the direction carries over to
     every colour and shape;
  3. and 4. all combinations at every noise level with 60% of the captions naming a
     random direction (the experiment's own settings), 1200 then 1000 steps: it learns
     to draw clean clips, and to follow the prompt only about half the time, which
     leaves RL something to fix.
  A single run over everything never learns the direction (docs/video.md). Then
  build_info.json with how it was made and the base's held-out metrics as
  `experiment=video_shapes` evaluates them.
The result is deterministic on a given machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "adapters" / "video" / "assets" / "shapes_base"
STAGES = (
    (
        "dataset.caption_noise=0",
        "+dataset.colors=[red]",
        "+dataset.shapes=[square]",
        "sigma_range=[1,1]",
        "steps=800",
        "lr_schedule=constant",
    ),
    (
        "dataset.caption_noise=0",
        "+dataset.seed=1",
        "sigma_range=[1,1]",
        "steps=400",
        "lr_schedule=constant",
    ),
    ("+dataset.seed=2",),
    ("+dataset.seed=3", "steps=1000"),
)


def main(args: list[str]) -> None:
    from _assets import build_base

    from alignflow.modalities.video.shapes import write_prompt_files

    todo = set(args) or {"--data", "--base"}
    if "--data" in todo:
        write_prompt_files()
    if "--base" in todo:
        info = {
            "made_by": "alignflow pretrain experiment=video_shapes (scripts/build_video_assets.py)",
            **build_base("video_shapes", TARGET, stages=STAGES),
        }
        (TARGET / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
