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
    """A batch of mono audio: ``samples`` [B, N] float32 in [-1, 1] at ``sample_rate`` Hz.
    ``lengths`` [B] (optional) counts the valid samples of each item when the batch is
    zero-padded to a common N; indexing gives one item trimmed to its length."""

    samples: torch.Tensor
    sample_rate: int
    lengths: torch.Tensor | None = None

    def __post_init__(self):
        if self.samples.dim() == 1:
            self.samples = self.samples[None]
        if self.samples.dim() != 2:
            raise ValueError(
                f"Waveform.samples must be [B, N] or [N], got shape {tuple(self.samples.shape)}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"Waveform.sample_rate must be > 0, got {self.sample_rate}")
        self.samples = self.samples.float()
        if self.lengths is not None:
            self.lengths = torch.as_tensor(self.lengths, dtype=torch.long).cpu()
            if self.lengths.shape != (len(self.samples),) or bool(
                (self.lengths > self.samples.shape[1]).any()
            ):
                raise ValueError(
                    f"Waveform.lengths must be [{len(self.samples)}] counts <= "
                    f"{self.samples.shape[1]}, "
                    f"got {self.lengths.tolist()}"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def length(self, index: int) -> int:
        return self.samples.shape[1] if self.lengths is None else int(self.lengths[index])

    def __getitem__(self, index: int) -> Waveform:
        """Item ``index`` as a [1, n] Waveform, trimmed to its length."""
        return Waveform(self.samples[index, : self.length(index)][None], self.sample_rate)

    def items(self) -> list[torch.Tensor]:
        """The B items as 1-D tensors, each trimmed to its length."""
        return [self.samples[b, : self.length(b)] for b in range(len(self))]

    def cpu(self) -> Waveform:
        return Waveform(self.samples.cpu(), self.sample_rate, self.lengths)

    @classmethod
    def from_items(cls, items: list[torch.Tensor], sample_rate: int) -> Waveform:
        """Zero-pad 1-D items to one batch with their lengths."""
        n = max(1, max(len(x) for x in items))
        samples = torch.zeros(len(items), n)
        for b, x in enumerate(items):
            samples[b, : len(x)] = x.float().cpu()
        return cls(samples, sample_rate, torch.tensor([len(x) for x in items]))

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / self.sample_rate

    def resample(self, sample_rate: int) -> Waveform:
        if sample_rate == self.sample_rate:
            return self
        import torchaudio.functional as AF

        lengths = (
            None
            if self.lengths is None
            else (self.lengths * sample_rate + self.sample_rate - 1) // self.sample_rate
        )
        samples = AF.resample(self.samples, self.sample_rate, sample_rate)
        if lengths is not None:
            lengths = lengths.clamp_max(samples.shape[1])
        return Waveform(samples, sample_rate, lengths)


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
    data = (
        wave.samples[index, : wave.length(index)]
        .detach()
        .cpu()
        .clamp(-1, 1)
        .numpy()
        .astype(np.float32)
    )
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, wave.sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
