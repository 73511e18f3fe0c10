"""Regenerate what the offline video default (`experiment=video_shapes`) ships with.

    .venv/bin/python scripts/build_video_assets.py [--data] [--base]   (default: both)

--data (seconds): modalities/video/data/, the train/eval prompt files
  (modalities.video.shapes.write_prompt_files).
--base (about 40 minutes on 2 CPU cores): adapters/video/assets/shapes_base, two runs
  of `alignflow pretrain experiment=video_shapes` (flow matching of the tiny Wan
  transformer on 8192 drawn clips): 2500 steps with 60% of the captions naming a random
  direction, where it learns to draw coloured shapes moving smoothly but not yet which
  way the caption says; then 1000 steps on fresh clips with 50% noisy captions, where it
  starts to follow the direction word (STAGES). Then build_info.json with how it was made
  and the base's held-out metrics as `experiment=video_shapes` evaluates them.
The result is deterministic on a given machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "adapters" / "video" / "assets" / "shapes_base"
STAGES = ((), ("dataset.caption_noise=0.5", "+dataset.seed=1", "steps=1000", "lr=1e-3"))


def main(args: list[str]) -> None:
    from alignflow.modalities.video.shapes import write_prompt_files
    from alignflow.sdk.pretrain import build_base

    todo = set(args) or {"--data", "--base"}
    if "--data" in todo:
        write_prompt_files()
    if "--base" in todo:
        info = {"made_by": "alignflow pretrain experiment=video_shapes (scripts/build_video_assets.py)",
                **build_base("video_shapes", TARGET, stages=STAGES)}
        (TARGET / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
