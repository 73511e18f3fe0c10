"""Speech prompt datasets: what to say and in whose voice.

A prompt file (jsonl, json, csv, parquet or a saved ``datasets`` folder; read by
:func:`alignflow.sdk.data.load_prompts`) has one row per utterance:

- ``prompt``: the text to speak;
- ``ref_audio``: a WAV/FLAC file of the voice to continue (absolute, or relative to
  the ``audio_root`` that the policy and the speaker reward are given);
- ``ref_text``: the transcript of ``ref_audio``.

Other columns pass through to the rewards as metadata. F5-TTS-style policies infill:
the reference audio's mel frames are given and the rest is generated, so the output
speaks ``prompt`` in the reference voice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignflow.modalities.speech.audio import Waveform, read_wav
from alignflow.sdk.errors import DataError

COLUMNS = ("ref_audio", "ref_text")


class ReferenceAudio:
    """``meta["ref_audio"]`` -> mono Waveform [1, N] at ``sample_rate``, read once per
    path. Relative paths resolve against ``root``."""

    def __init__(self, root: str = "", sample_rate: int = 24000):
        self.root, self.sample_rate = Path(root).expanduser() if root else None, sample_rate
        self._cache: dict[Path, Waveform] = {}

    def path(self, meta: Mapping[str, Any]) -> Path:
        missing = [c for c in COLUMNS if not isinstance(meta.get(c), str) or not meta.get(c)]
        if missing:
            raise DataError(
                f"speech prompt {dict(meta)!r}: missing or empty column(s) {missing}; a speech "
                f"prompt row needs {list(COLUMNS)} besides the prompt (see "
                "alignflow.modalities.speech.prompts)"
            )
        path = Path(meta["ref_audio"]).expanduser()
        return path if path.is_absolute() or self.root is None else self.root / path

    def __call__(self, meta: Mapping[str, Any]) -> Waveform:
        path = self.path(meta)
        if path not in self._cache:
            self._cache[path] = read_wav(path, self.sample_rate)
        return self._cache[path]
