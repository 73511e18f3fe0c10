"""Where an iteration of the video default spends its time.

    .venv/bin/python benchmarks/video.py [--iterations 3] [overrides ...]

1. Runs `experiment=video_shapes` (no evaluation, checkpoints or media) for a warm-up
   iteration and ``--iterations`` timed ones: wall clock and the trainer's split.
2. In the same process, on the same shapes, times each part alone: the rollout's
   denoiser forwards, decoding, the reward (optical flow) and training (forward +
   backward of the trained steps' micro-batches).
Everything runs in one process, back to back: ratios are meaningful on a noisy machine.
The Wan2.1-T2V-1.3B architecture at full size is benchmarks/realscale.py's (GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import iteration_split, parts, print_parts  # noqa: E402

from alignflow.sdk.config import compose  # noqa: E402
from alignflow.sdk.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose(
        "train",
        [
            "experiment=video_shapes",
            "output_dir=outputs/benchmark_video",
            "data.eval=",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            "logging.media=false",
            "checkpoint.overwrite=true",
            *args.overrides,
        ],
    )
    tr = Trainer(cfg)
    wall, split = iteration_split(tr, args.warmup, args.iterations)
    alone = parts(tr, "decode")
    s = cfg.sample
    print(
        f"video_shapes: {s.prompts_per_iteration} prompts x {s.group_size} clips of "
        f"{tr.policy.latent_shape}, "
        f"{s.num_steps} steps, {cfg.algorithm['name']}, {torch.get_num_threads()} threads"
    )
    print_parts(wall, split, alone)


if __name__ == "__main__":
    main()
