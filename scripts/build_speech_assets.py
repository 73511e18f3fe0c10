"""Regenerate what the offline speech default ships with.

    .venv/bin/python scripts/build_speech_assets.py [--data] [--base]   (default: both)

--data (seconds; needs flite): modalities/speech/data/, the reference clips of the four
  flite voices and the train/eval prompt files (modalities.speech.sentences.write_data).
--base (about 100 minutes on 2 CPU cores): adapters/speech/assets/sentences_base,
  `alignflow pretrain experiment=speech_tiny` (3000 steps of F5-TTS's infilling flow
  matching on flite sentences with 40% noisy transcripts and 30% voice switches), the
  weights stored in float16 (9 MB instead of 18; they load as float32), then
  build_info.json with how it was made and the base's held-out WER and similarity.
The result is deterministic on a given machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "adapters" / "speech" / "assets" / "sentences_base"


def pretrain() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "base"
        cmd = [sys.executable, "-m", "alignflow.sdk.cli", "pretrain", "experiment=speech_tiny", f"output_dir={out}"]
        result = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(out, TARGET)
    halve(TARGET / "model.safetensors")
    start = result.stdout.find("{")
    return json.loads(result.stdout[start:]) if start >= 0 else {}


def halve(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}, path)


def base_metrics() -> dict[str, float]:
    """The shipped base on the eval prompts, evaluated as `experiment=speech_tiny` does."""
    from alignflow.sdk.cli import compose
    from alignflow.sdk.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("train", ["experiment=speech_tiny", f"output_dir={tmp}", "logging.progress_bar=false",
                                "logging.tensorboard=false", "logging.media=false"])
        return Trainer(cfg).evaluate()


def main(args: list[str]) -> None:
    from alignflow.modalities.speech.sentences import write_data

    todo = set(args) or {"--data", "--base"}
    if "--data" in todo:
        write_data()
    if "--base" in todo:
        summary = pretrain()
        info = {"made_by": "alignflow pretrain experiment=speech_tiny (scripts/build_speech_assets.py)",
                "pretrain": {k: summary.get(k) for k in ("final_loss", "seconds")},
                "eval": base_metrics()}
        (TARGET / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
