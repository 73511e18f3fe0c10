"""Writing speech: WAV files per sample and spectrogram pictures to look at first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alignflow.modalities.speech.audio import Waveform, write_wav


def _spectrograms(items: Sequence[Waveform]) -> list[torch.Tensor]:
    from alignflow.modalities.speech.mel import MelCodec, MelConfig

    codec = MelCodec(MelConfig(sample_rate=items[0].sample_rate))
    return [codec.encode(w)[0].T for w in items]  # [n_mels, T] each


def _plot(columns: Sequence[tuple[str, Sequence[Waveform]]], per_row: int, path: Path) -> Path:
    """One small spectrogram per item; each column block (e.g. before | after) holds the
    items prompt-major, ``per_row`` samples of a prompt side by side and as many prompts
    per line as fit 8 panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = per_row * max(1, 8 // per_row)
    n = len(columns[0][1])
    rows, blocks = (n + ncol - 1) // ncol, len(columns)
    fig, axes = plt.subplots(
        rows,
        ncol * blocks,
        figsize=(1.3 * ncol * blocks + 0.2 * (blocks - 1), 0.8 * rows + 0.4),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for c, (title, items) in enumerate(columns):
        for i, mel in enumerate(_spectrograms(items)):
            ax = axes[i // ncol][c * ncol + i % ncol]
            ax.imshow(
                mel.numpy(), origin="lower", aspect="auto", vmin=-11.5, vmax=2.0, cmap="magma"
            )
        fig.text((c + 0.01) / blocks, 0.995, title, fontsize=9, ha="left", va="top")
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / (0.8 * rows + 0.4)))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


class SpeechWriter:
    """The trainer's media writer for speech: ``<path>/<prompt>_<sample>.wav`` for every
    sample and ``<path>.png`` with their mel spectrograms."""

    suffix = ".png"

    def save_item(self, item: Waveform, path: Path) -> Path:
        """One clip as 16-bit WAV."""
        return write_wav(Path(path).with_suffix(".wav"), item)

    def save_samples(
        self, media: Sequence[Waveform], path: Path, per_row: int, title: str = ""
    ) -> Path:
        path = Path(path)
        for i, item in enumerate(media):
            write_wav(path / f"{i // per_row:03d}_{i % per_row:02d}.wav", item)
        return _plot([(title, media)], per_row, path.with_suffix(self.suffix))

    def save_comparison(
        self,
        before: Sequence[Waveform],
        after: Sequence[Waveform],
        path: Path,
        per_row: int,
        titles: Sequence[str] = ("before", "after"),
    ) -> Path:
        path = Path(path)
        for name, items in (("before", before), ("after", after)):
            for i, item in enumerate(items):
                write_wav(path / name / f"{i // per_row:03d}_{i % per_row:02d}.wav", item)
        return _plot(
            [(titles[0], before), (titles[1], after)], per_row, path.with_suffix(self.suffix)
        )
