"""Where an iteration of the image_digits demo spends its time, and how much of it the
trainer adds on top of the model's own forward and backward passes.

    .venv/bin/python benchmarks/overhead.py [--iterations 10] [overrides ...]

1. Runs the demo's configuration (no evaluation, checkpoints or media) for a few warm-up
   iterations, then times ``--iterations`` iterations: wall clock, and the trainer's
   own split into rollout / reward (waiting for the worker) / training / other.
2. In the same process, on the same shapes, times the bare model work the iteration
   must do: the rollout's N denoiser forwards, the reward model, and per training
   micro-batch one forward + backward (plus the reference forward when the KL is on).
3. Prints both and their ratio. Everything runs in one process, back to back, so the
   ratio is meaningful on a noisy machine even when absolute seconds are not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import iteration_split, model_only, print_split  # noqa: E402

from alignflow.sdk.config import compose  # noqa: E402
from alignflow.sdk.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--experiment", default="image_digits")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose(
        "train",
        [
            f"experiment={args.experiment}",
            f"output_dir=outputs/benchmark_{args.experiment}",
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
    title = (
        f"{args.experiment}, {cfg.sample.prompts_per_iteration} prompts x "
        f"{cfg.sample.group_size} samples, "
        f"{cfg.sample.num_steps} steps, micro-batch {cfg.train.micro_batch_size}, "
        f"{torch.get_num_threads()} threads, mean of {args.iterations} iterations"
    )
    print_split(title, wall, split, model_only(tr))


if __name__ == "__main__":
    main()
