"""A tiny F5-TTS for the offline speech default (``experiment=speech_tiny``).

The real architecture (:class:`~alignflow.adapters.speech.dit.DiT`) at 4 layers x 256
wide, a character vocabulary of the task's sentences, F5-TTS's mel (24 kHz, 100 mels,
hop 256) and the Griffin-Lim vocoder. Its base is pretrained by ``alignflow pretrain
experiment=speech_tiny`` on flite speech (:mod:`alignflow.modalities.speech.sentences`)
and ships in ``assets/sentences_base`` (``scripts/build_speech_assets.py`` regenerates it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from alignflow.adapters.speech.dit import DiT, DiTConfig
from alignflow.adapters.speech.f5 import F5Policy, load_f5_policy
from alignflow.adapters.speech.text import CharVocab
from alignflow.modalities.speech import sentences
from alignflow.modalities.speech.mel import MelCodec
from alignflow.sdk.errors import ConfigError

ASSETS = Path(__file__).parent / "assets"
TINY_ARCH = DiTConfig(
    dim=256,
    depth=4,
    heads=4,
    dim_head=64,
    ff_mult=2,
    text_dim=128,
    conv_layers=2,
    dropout=0.0,
    text_num_embeds=64,
)
MAX_FRAMES = 224  # 2.4 s: the longest reference + target of the task (slowest speed) is ~2.3 s


def tiny_vocab() -> CharVocab:
    chars = set("".join(sentences.TARGETS + sentences.REFERENCES)) | set(". ,'")
    return CharVocab(sorted(chars))


def load_tiny_f5(
    path: str = "",
    random_init: bool = False,
    seed: int = 0,
    max_frames: int = MAX_FRAMES,
    audio_root: str = str(sentences.DATA_DIR),
    arch: dict | None = None,
    epss: bool = True,
    prompt_frames: str = "free",
    frame_padding: str = "max_frames",
    gradient_checkpointing: bool = False,
) -> F5Policy:
    """The tiny policy from ``path`` (default: the shipped base), or freshly initialised
    (seeded) with ``random_init=True`` for pretraining; ``arch`` overrides fields of
    ``TINY_ARCH`` for a fresh one (e.g. ``{dim: 256}``); ``epss``: F5-TTS 1.1's pruned
    time grid at the step counts that have one (``f5.sway_sigmas``); ``prompt_frames``:
    ``free`` (F5-TTS's sampling) or ``pinned``; ``frame_padding``: ``max_frames`` (how
    the shipped base was pretrained: it needs to see the silence after the speech) or
    ``batch`` (F5-TTS's masked batching; see :mod:`alignflow.adapters.speech.f5`);
    ``gradient_checkpointing``: recompute each DiT block in the backward pass."""
    settings = dict(
        max_frames=max_frames,
        audio_root=audio_root,
        epss=epss,
        prompt_frames=prompt_frames,
        frame_padding=frame_padding,
        gradient_checkpointing=gradient_checkpointing,
    )
    if not random_init:
        folder = Path(path) if path else ASSETS / "sentences_base"
        if not (folder / "model.safetensors").is_file():
            raise ConfigError(
                "policy.path",
                str(folder),
                "a folder written by `alignflow pretrain "
                "experiment=speech_tiny` (scripts/build_speech_assets.py --base makes the "
                "shipped one)",
            )
        return load_f5_policy(str(folder), **settings)
    unknown = sorted(set(arch or {}) - set(DiTConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            "policy.arch", unknown, f"keys of {sorted(DiTConfig.__dataclass_fields__)}"
        )
    torch.manual_seed(seed)
    config = dataclasses.replace(TINY_ARCH, **(arch or {}))
    return F5Policy(DiT(config), tiny_vocab(), MelCodec(), **settings)
