"""Shared helpers: a tiny, fast variant of the image_digits experiment."""

from pathlib import Path

from alignflow.sdk.cli import compose

FAST = [
    "experiment=image_digits",
    "sample.num_steps=4",
    "sample.group_size=4",
    "sample.prompts_per_iteration=2",
    "sample.batch_size=8",
    "train.micro_batch_size=8",
    "train.optimizer_steps=2",
    "train.iterations=2",
    "eval.num_steps=4",
    "eval.samples_per_prompt=1",
    "eval.every=0",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
    "logging.media=false",
]


def digits_cfg(out: Path, *overrides: str):
    """RunConfig of the fast digits run writing to ``out``."""
    return compose("train", [*FAST, f"output_dir={out}", *overrides])


def strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
