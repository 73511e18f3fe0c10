"""The built-in offline speech task: short sentences spoken by Debian's flite voices.

flite's voices (kal16, awb, rms, slt) are built from real recorded speakers, so speaker
similarity models tell them apart (measured in docs/speech.md). The task: continue a
reference phrase ("thank you", in one voice) with a target sentence ("the cat sat") in
the same voice. Shipped here: the reference clips (``data/refs/*.wav``) and the prompt
files; the target clips are synthesised when the base model is pretrained
(:func:`sentences_dataset`, needs the ``flite`` program).

Held out: the reference phrases ``hello there`` and ``well done`` appear only in the
eval prompts. They were chosen by a rule fixed before any run on them: the first
unseen phrases spelt with the base's characters whose flite clips in all four voices are
as long as the training references' (0.70-0.98 s), from the list "hello there", "how are
you", "good night", "well done", "take care", "see you soon", "all right" (the others
have a clip of 0.52-0.68 s). The earlier held-out
phrase, ``nice to meet you`` (up to 1.29 s), put the target where the base had never
seen one: rms's WER on it hardly moved under RL (docs/speech.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from alignflow.modalities.speech.audio import Waveform, read_wav, write_wav
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import generator

VOICES = ("kal16", "awb", "rms", "slt")
TARGETS = (
    "the cat sat",
    "open the door",
    "dogs can swim",
    "call me now",
    "the sun is hot",
    "bring the cup",
    "she reads books",
    "we like apples",
)
REFERENCES = ("good morning", "see you later", "thank you", "hello there", "well done")
TRAIN_REFERENCES, EVAL_REFERENCES = REFERENCES[:3], REFERENCES[3:]
SAMPLE_RATE = 16000  # flite's
DATA_DIR = Path(__file__).parent / "data"
PROMPT_FILES = {
    "train": DATA_DIR / "sentences_train.jsonl",
    "eval": DATA_DIR / "sentences_eval.jsonl",
    # half of eval (its first reference phrase, 8 sentences x 4 voices): the quick
    # held-out set of the demo test and the cross-modal benchmark
    "eval_short": DATA_DIR / "sentences_eval_short.jsonl",
}


def flite(text: str, voice: str, stretch: float = 1.0) -> Waveform:
    """``text`` spoken by flite's ``voice`` (``stretch`` > 1 speaks slower), leading and
    trailing silence trimmed to 50 ms: [1, N] at 16 kHz."""
    if shutil.which("flite") is None:
        raise ConfigError("flite", "not found", "the flite program (apt-get install flite)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        subprocess.run(
            [
                "flite",
                "-voice",
                voice,
                "--setf",
                f"duration_stretch={stretch}",
                "-t",
                text,
                "-o",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        wave = read_wav(path)
    return Waveform(trim(wave.samples[0], wave.sample_rate)[None], wave.sample_rate)


def trim(
    samples: torch.Tensor, sample_rate: int, margin: float = 0.05, threshold: float = 0.02
) -> torch.Tensor:
    """Cut silence before the first and after the last 10 ms window whose mean |amplitude|
    exceeds ``threshold`` x the loudest window's, keeping ``margin`` seconds each side."""
    win = sample_rate // 100
    env = torch.nn.functional.avg_pool1d(samples.abs()[None, None], win, win)[0, 0]
    loud = (env > threshold * env.max()).nonzero().flatten()
    if len(loud) == 0:
        return samples
    pad = int(margin * sample_rate)
    return samples[
        max(0, int(loud[0]) * win - pad) : min(len(samples), (int(loud[-1]) + 1) * win + pad)
    ]


def ref_name(voice: str, text: str) -> str:
    return f"refs/{voice}_{text.replace(' ', '_')}.wav"


def prompt_rows(split: str) -> list[dict]:
    refs = {"train": TRAIN_REFERENCES, "eval": EVAL_REFERENCES, "eval_short": EVAL_REFERENCES[:1]}
    refs = refs[split]
    return [
        {"prompt": t, "ref_audio": ref_name(v, r), "ref_text": r, "voice": v}
        for v in VOICES
        for r in refs
        for t in TARGETS
    ]


def write_data(folder: Path = DATA_DIR) -> None:
    """(Re)write the reference clips and the prompt files (needs flite)."""
    for v in VOICES:
        for r in REFERENCES:
            write_wav(folder / ref_name(v, r), flite(r, v))
    for split, path in PROMPT_FILES.items():
        with open(folder / path.name, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in prompt_rows(split))


def clip_keys(stretches: tuple[float, ...]) -> dict[str, tuple]:
    """{key: (voice, phrase) of a reference clip, or (voice, text, stretch) of a target}."""
    keys = {f"ref/{v}/{r}": (v, r) for v in VOICES for r in TRAIN_REFERENCES}
    keys.update(
        {f"target/{v}/{t}/{s}": (v, t, s) for v in VOICES for t in TARGETS for s in stretches}
    )
    return keys


def flite_clips(stretches: tuple[float, ...] = (1.0,)) -> dict[str, torch.Tensor]:
    """What the pretraining data is cut from, at flite's 16 kHz: the shipped reference
    clips (``ref/<voice>/<phrase>``) and flite's targets (``target/<voice>/<text>/<stretch>``,
    needs flite)."""
    out = {}
    for key, what in clip_keys(stretches).items():
        if len(what) == 2:
            voice, phrase = what
            out[key] = read_wav(DATA_DIR / ref_name(voice, phrase)).samples[0]
        else:
            voice, text, stretch = what
            out[key] = flite(text, voice, stretch).samples[0]
    return out


def save_clips(path: str | Path, stretches: tuple[float, ...] = (0.8, 1.0, 1.2)) -> Path:
    """:func:`flite_clips` as a safetensors file: ``dataset.clips=<path>`` then builds the
    pretraining data on a machine without flite (a GPU box, say)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in flite_clips(tuple(stretches)).items()}, str(path))
    return Path(path)


def load_clips(path: str, stretches: tuple[float, ...]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ConfigError(
            "dataset.clips", path, "a file written by scripts/build_speech_assets.py --write-clips"
        )
    found = load_file(path)
    missing = [k for k in clip_keys(stretches) if k not in found]
    if missing:
        raise ConfigError(
            "dataset.clips",
            path,
            f"a clips file with every clip of stretches {list(stretches)}; "
            f"{len(missing)} missing, e.g. {missing[0]!r}",
        )
    return found


def sentences_dataset(
    caption_noise: float = 0.0,
    voice_noise: float = 0.0,
    copies: int = 1,
    stretches: tuple[float, ...] = (1.0,),
    seed: int = 0,
    hop_length: int = 256,
    sample_rate: int = 24000,
    clips: str = "",
) -> tuple[Waveform, list[str], list[dict]]:
    """Pretraining data: every (voice, train reference, target) as the reference clip
    followed by the target clip, ``copies`` times. With probability ``caption_noise`` the
    caption names another target than the one spoken (noisy transcripts), and with
    probability ``voice_noise`` the target is spoken by another voice than the
    reference's; both leave prompt following and voice keeping for RL to improve. Each
    copy speaks the targets at one of ``stretches`` (in turn): at sampling time the
    duration comes from F5-TTS's text-length rule, not from the audio, so the model
    must have seen each sentence at several speeds. ``clips``: a file of
    :func:`save_clips` to read the clips from instead of running flite.

    Returns (Waveform [N, S] at ``sample_rate`` with lengths, captions, metadata with
    ``ref_text``, ``prompt_frames`` and ``frames`` for the policy's infilling)."""
    stretches = tuple(stretches)
    source = load_clips(clips, stretches) if clips else flite_clips(stretches)
    audio = {
        what: Waveform(source[key][None], SAMPLE_RATE).resample(sample_rate).samples[0]
        for key, what in clip_keys(stretches).items()
    }
    refs = {what: x for what, x in audio.items() if len(what) == 2}
    targets = {what: x for what, x in audio.items() if len(what) == 3}
    g = generator(seed, "sentences")
    items, captions, meta = [], [], []
    for copy in range(copies):
        stretch = stretches[copy % len(stretches)]
        for v in VOICES:
            for r in TRAIN_REFERENCES:
                for t in TARGETS:
                    said = (
                        t
                        if torch.rand((), generator=g) >= caption_noise
                        else TARGETS[int(torch.randint(len(TARGETS), (), generator=g))]
                    )
                    voice = (
                        v
                        if torch.rand((), generator=g) >= voice_noise
                        else VOICES[int(torch.randint(len(VOICES), (), generator=g))]
                    )
                    ref = refs[v, r]
                    # the prompt ends on a frame boundary
                    ref = torch.cat([ref, ref.new_zeros(-len(ref) % hop_length)])
                    audio = torch.cat([ref, targets[voice, said, stretch]])
                    items.append(audio)
                    captions.append(t)
                    meta.append(
                        {
                            "ref_text": r,
                            "prompt_frames": len(ref) // hop_length,
                            "frames": len(audio) // hop_length + 1,
                        }
                    )
    return Waveform.from_items(items, sample_rate), captions, meta
