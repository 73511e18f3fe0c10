"""The GE2E speaker encoder of resemblyzer, with its pretrained weights, without the
resemblyzer package.

GE2E (Wan et al., "Generalized End-to-End Loss for Speaker Verification", arXiv
1710.10467): a 3-layer LSTM over 40-band mel frames whose last hidden state, through a
linear layer and a ReLU, is an L2-normalised 256-d d-vector. An utterance is cut into
1.6 s windows (160 frames) at 1.3 windows a second; its embedding is the normalised mean
of the windows'. Before that the waveform is brought to -30 dBFS (louder only) and
silences longer than 7 VAD windows of 30 ms are cut (webrtcvad, aggressiveness 3).

The weights are resemblyzer 0.1.4's ``pretrained.pt`` (Resemble AI, Apache-2.0; see
``assets/ge2e/NOTICE``), converted to safetensors by ``scripts/build_speech_assets.py
--ge2e``. The package itself cannot be an install requirement: it requires the
source-only ``webrtcvad``, whose module needs ``pkg_resources``, gone from setuptools
81. ``tests/rewards/test_speech_rewards.py`` checks that this module embeds as
resemblyzer does.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from torch import nn

RATE = 16000
HOP = RATE // 100  # 10 ms mel hop
WINDOW = 160  # mel frames per partial utterance (1.6 s)
VAD_WINDOW = RATE * 30 // 1000  # 30 ms


class GE2E(nn.Module):
    """mel frames [B, T, 40] -> d-vectors [B, 256], unit norm."""

    def __init__(self, n_mels: int = 40, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, hidden)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(mels)
        e = torch.relu(self.linear(h[-1]))
        return e / torch.norm(e, dim=1, keepdim=True)


def load_ge2e(device: str = "cpu") -> GE2E:
    from safetensors.torch import load_file

    model = GE2E()
    path = resources.files("alignflow.rewards.speech") / "assets" / "ge2e" / "ge2e.safetensors"
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False)


def preprocess(wav: np.ndarray) -> np.ndarray:
    """A 16 kHz waveform, louder to -30 dBFS if quieter, with long silences cut."""
    wav = wav.astype(np.float32)
    rms = np.sqrt(np.mean((wav * 32767) ** 2))
    gain_db = -30 - 20 * np.log10(rms / 32767)
    if gain_db > 0:
        wav = wav * 10 ** (gain_db / 20)
    return trim_silences(wav)


def trim_silences(wav: np.ndarray) -> np.ndarray:
    """Keep the 30 ms windows that webrtcvad calls speech after a moving average over 8
    windows, widened by 3 windows on each side (silences of up to 6 windows survive)."""
    import webrtcvad
    from scipy.ndimage import binary_dilation

    wav = wav[: len(wav) - len(wav) % VAD_WINDOW]
    pcm = np.round(wav * 32767).astype(np.int16).tobytes()
    vad = webrtcvad.Vad(3)
    voiced = np.array(
        [
            vad.is_speech(pcm[2 * s : 2 * (s + VAD_WINDOW)], RATE)
            for s in range(0, len(wav), VAD_WINDOW)
        ]
    )
    width = 8
    padded = np.concatenate((np.zeros((width - 1) // 2), voiced, np.zeros(width // 2)))
    sums = np.cumsum(padded, dtype=float)
    sums[width:] = sums[width:] - sums[:-width]
    mask = np.round(sums[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(7))
    return wav[np.repeat(mask, VAD_WINDOW)]


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """Power mel spectrogram (not log), 25 ms windows, 10 ms hop, 40 bands: [T, 40]."""
    import librosa

    return (
        librosa.feature.melspectrogram(
            y=wav, sr=RATE, n_fft=RATE * 25 // 1000, hop_length=HOP, n_mels=40
        )
        .astype(np.float32)
        .T
    )


def windows(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """Start frames of the partial utterances: every round(RATE / rate / HOP) frames
    while they overlap the utterance; the last is dropped if it covers less than
    ``min_coverage`` of itself (unless it is the only one)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round(RATE / rate / HOP))
    starts = list(range(0, max(1, n_frames - WINDOW + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (WINDOW * HOP)
    return starts[:-1] if coverage < min_coverage and len(starts) > 1 else starts


@torch.no_grad()
def embed_utterance(model: GE2E, wav: np.ndarray) -> torch.Tensor:
    """One preprocessed 16 kHz utterance -> its d-vector [256] (float32, unit norm)."""
    starts = windows(len(wav))
    end = (starts[-1] + WINDOW) * HOP
    if end >= len(wav):
        wav = np.pad(wav, (0, end - len(wav)))
    mel = mel_frames(wav)
    batch = torch.from_numpy(np.stack([mel[s : s + WINDOW] for s in starts]))
    device = next(model.parameters()).device
    partial = model(batch.to(device)).cpu().numpy()
    mean = partial.mean(axis=0)
    return torch.from_numpy(mean / np.linalg.norm(mean, 2))
