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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "adapters" / "speech" / "assets" / "sentences_base"


def halve(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}, path)


def main(args: list[str]) -> None:
    from alignflow.modalities.speech.sentences import write_data

    todo = set(args) or {"--data", "--base"}
    if "--data" in todo:
        write_data()
    if "--base" in todo:
        from alignflow.sdk.pretrain import build_base

        info = {"made_by": "alignflow pretrain experiment=speech_tiny (scripts/build_speech_assets.py)",
                **build_base("speech_tiny", TARGET, finish=lambda folder: halve(folder / "model.safetensors"))}
        (TARGET / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
