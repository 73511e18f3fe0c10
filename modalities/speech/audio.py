"""Waveform container and WAV I/O (soundfile: torchaudio.load/save need torchcodec)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignflow.sdk.errors import ConfigError


@dataclass
class Waveform:
    """``samples`` [B, N] float32 in [-1, 1] (mono), ``sample_rate`` in Hz."""

    samples: torch.Tensor
    sample_rate: int

    def __post_init__(self):
        if self.samples.dim() == 1:
            self.samples = self.samples[None]
        if self.samples.dim() != 2:
            raise ValueError(f"Waveform.samples must be [B, N] or [N], got shape {tuple(self.samples.shape)}")
        if self.sample_rate <= 0:
            raise ValueError(f"Waveform.sample_rate must be > 0, got {self.sample_rate}")
        self.samples = self.samples.float()

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / self.sample_rate

    def resample(self, sample_rate: int) -> Waveform:
        if sample_rate == self.sample_rate:
            return self
        import torchaudio.functional as AF

        return Waveform(AF.resample(self.samples, self.sample_rate, sample_rate), sample_rate)


def read_wav(path: str | Path, sample_rate: int | None = None) -> Waveform:
    """A mono Waveform [1, N] from an audio file soundfile reads (WAV, FLAC, OGG); channels
    are averaged; resampled to ``sample_rate`` if given."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise ConfigError("audio path", str(path), "an existing audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as e:  # soundfile's LibsndfileError
        raise ConfigError("audio path", str(path), f"an audio file soundfile can read ({e})") from e
    wave = Waveform(torch.from_numpy(data.mean(axis=1)), rate)
    return wave.resample(sample_rate) if sample_rate else wave


def write_wav(path: str | Path, wave: Waveform, index: int = 0) -> Path:
    """Write item ``index`` of ``wave`` as 16-bit PCM WAV, atomically (temp file + rename)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave.samples[index].detach().cpu().clamp(-1, 1).numpy().astype(np.float32)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, wave.sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
