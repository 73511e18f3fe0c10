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

from alignflow.modalities.sources import SourceMedia
from alignflow.modalities.speech.audio import read_wav

COLUMNS = ("ref_audio", "ref_text")


class ReferenceAudio(SourceMedia):
    """``meta["ref_audio"]`` -> mono Waveform [1, N] at ``sample_rate``, read once per
    path (the row also needs ``ref_text``). Relative paths resolve against ``root``."""

    def __init__(self, root: str = "", sample_rate: int = 24000):
        super().__init__(
            "ref_audio",
            lambda path: read_wav(path, sample_rate),
            root,
            required=COLUMNS,
            what="speech prompt",
            root_field="policy.audio_root",
        )
        self.sample_rate = sample_rate
