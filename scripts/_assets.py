"""What the asset scripts share: pretrain an experiment's base in fresh processes and
evaluate it as a training run does at iteration 0 (scripts/build_*_assets.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_base(
    experiment: str,
    target: Path,
    *extra: str,
    stages: tuple[tuple[str, ...], ...] = ((),),
    finish: Any = None,
) -> dict[str, Any]:
    """What the asset scripts share: run ``alignflow pretrain experiment=<experiment>``
    (``extra`` overrides) in a fresh process, install the result in ``target``, call
    ``finish(target)`` if given (e.g. store the weights in float16), then evaluate it as
    ``alignflow train experiment=<experiment>`` would at iteration 0.

    ``stages``: one tuple of further overrides per pretraining run; each run after the
    first starts from the previous one's weights (``policy.random_init=false
    policy.path=<previous>``), e.g. a second run on less noisy captions.
    Returns {pretrain: {final_loss, seconds}, eval: {...}}; the caller writes it."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile

    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        previous = None
        for k, stage in enumerate(stages):
            out = Path(tmp) / f"stage{k}"
            start_from = (
                []
                if previous is None
                else ["policy.random_init=false", f"++policy.path={previous}"]
            )
            cmd = [
                sys.executable,
                "-m",
                "alignflow.sdk.cli",
                "pretrain",
                f"experiment={experiment}",
                f"output_dir={out}",
                *extra,
                *start_from,
                *stage,
            ]
            result = subprocess.run(cmd, check=True, capture_output=True, text=True)
            summary = json.loads(result.stdout[result.stdout.find("{") :])
            seconds += summary.get("seconds", 0.0)
            previous = out
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(previous, target)
    if finish is not None:
        finish(target)
    return {
        "pretrain": {
            "final_loss": summary.get("final_loss"),
            "seconds": seconds,
            "stages": len(stages),
        },
        "eval": evaluate_base(experiment),
    }


def evaluate_base(experiment: str, *extra: str) -> dict[str, float]:
    """``experiment``'s policy (its shipped base unless ``extra`` says otherwise) on its
    eval prompts, as the training run evaluates at iteration 0."""
    import tempfile

    from alignflow.sdk.config import compose
    from alignflow.sdk.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            "train",
            [
                f"experiment={experiment}",
                f"output_dir={tmp}",
                "logging.progress_bar=false",
                "logging.tensorboard=false",
                "logging.media=false",
                *extra,
            ],
        )
        return Trainer(cfg).evaluate()
