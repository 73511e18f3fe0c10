"""Regenerate what the offline speech default (`experiment=speech_tiny`) ships with.

    .venv/bin/python scripts/build_speech_assets.py [--data] [--base] [--clips FILE]
        [--write-clips FILE] [--ge2e]

--data (seconds; needs flite): modalities/speech/data/, the reference clips of the four
  flite voices and the train/eval prompt files (modalities.speech.sentences.write_data).
--write-clips FILE (seconds; needs flite): every flite clip the pretraining data is cut
  from, in one safetensors file (6.5 MB), for a machine without flite.
--base: adapters/speech/assets/sentences_base, two runs of `alignflow pretrain
  experiment=speech_tiny` (F5-TTS's infilling flow matching on flite sentences, 40% of
  the transcripts naming another sentence, 30% of the targets in another voice; STAGES):
  1. from random weights, 2000 steps of 256 clips;
  2. from stage 1, on fresh draws of the noise (dataset seed 1), 2500 steps of 512.
  About 1.8 million clips in all: 9 minutes on one H100, where it was made (the two
  stages, `device=auto`), and more than a day on 2 CPU cores. The weights are stored in
  float16 (9 MB instead of 18; they load as float32), then build_info.json with how it
  was made and the base's held-out WER and similarity (the evaluation needs the speech
  extra: Whisper and resemblyzer). With --clips FILE the data is read from FILE instead
  of running flite.
--ge2e: rewards/speech/assets/ge2e/ge2e.safetensors, the speaker encoder's weights
  taken from resemblyzer 0.1.4's pretrained.pt (the model state only; needs
  `pip install --no-deps resemblyzer==0.1.4`, as scripts/setup.sh does for the tests).
The result is deterministic on a given machine and device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "adapters" / "speech" / "assets" / "sentences_base"
GE2E = ROOT / "rewards" / "speech" / "assets" / "ge2e" / "ge2e.safetensors"
STAGES = (
    (),
    ("+dataset.seed=1", "batch_size=512", "steps=2500"),
)


def halve(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}, path
    )


def write_ge2e() -> None:
    """resemblyzer's LSTM and linear weights, as safetensors (no pickle at run time)."""
    import resemblyzer
    import torch
    from safetensors.torch import save_file

    state = torch.load(
        Path(resemblyzer.__file__).parent / "pretrained.pt", map_location="cpu", weights_only=True
    )["model_state"]
    GE2E.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in state.items() if k.startswith(("lstm.", "linear."))}, GE2E
    )


def main(argv: list[str]) -> None:
    import argparse

    from alignflow.modalities.speech.sentences import save_clips, write_data

    parser = argparse.ArgumentParser(
        description="Regenerate the speech default's data and base (see the docstring)."
    )
    parser.add_argument("--data", action="store_true")
    parser.add_argument("--base", action="store_true")
    parser.add_argument(
        "--clips", default="", help="with --base: read flite's clips from this file"
    )
    parser.add_argument("--write-clips", default="", help="write flite's clips to this file")
    parser.add_argument(
        "--ge2e", action="store_true", help="the speaker encoder's weights, from resemblyzer"
    )
    args = parser.parse_args(argv)
    if not (args.data or args.base or args.write_clips or args.ge2e):
        args.data = args.base = True
    if args.ge2e:
        write_ge2e()
    if args.data:
        write_data()
    if args.write_clips:
        save_clips(args.write_clips)
    if args.base:
        from _assets import build_base

        extra = [f"++dataset.clips={Path(args.clips).resolve()}"] if args.clips else []
        info = {
            "made_by": "alignflow pretrain experiment=speech_tiny "
            "(scripts/build_speech_assets.py), weights stored in float16",
            **build_base(
                "speech_tiny",
                TARGET,
                *extra,
                stages=STAGES,
                finish=lambda folder: halve(folder / "model.safetensors"),
            ),
        }
        (TARGET / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
