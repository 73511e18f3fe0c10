"""Voice keeping: cosine similarity of speaker embeddings of the generated speech and
the reference audio it continues (Seed-TTS-eval's SIM, with a different embedder).

Embedders:
- ``resemblyzer`` (default, offline): resemblyzer's GE2E d-vector model (Wan et al.,
  arXiv 1710.10467) with its weights, shipped here (:mod:`.ge2e`); its VAD trims
  silences first.
- ``wavlm``: transformers' ``WavLMForXVector`` (e.g. microsoft/wavlm-base-plus-sv)
  from a local folder or hub id, the product path.
Measured on flite voices (docs/rewards.md): same voice 0.68-0.96, other voices
0.43-0.77 with resemblyzer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from alignflow.modalities.speech.audio import Waveform
from alignflow.modalities.speech.prompts import ReferenceAudio
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.extras import require
from alignflow.sdk.rewards import RewardOutput

EMBED_RATE = 16000


class ResemblyzerEmbedder:
    """resemblyzer's GE2E d-vector encoder and its weights (:mod:`.ge2e`)."""

    def __init__(self, device: str = "cpu"):
        from alignflow.rewards.speech import ge2e

        for module in (
            "webrtcvad",
            "librosa",
            "scipy.ndimage",
        ):  # imported when it embeds: checked now
            require(module, "reward.backend", "resemblyzer", "the offline speaker embedder")
        self.ge2e, self.model = ge2e, ge2e.load_ge2e(device)

    def __call__(self, audio: Sequence[np.ndarray]) -> torch.Tensor:
        """[B] 1-D arrays at 16 kHz -> [B, 256] unit vectors."""
        out = []
        for a in audio:
            wav = self.ge2e.preprocess(a)
            if len(wav) < EMBED_RATE // 10:  # the VAD found (almost) no speech: embed what there is
                wav = a.astype(np.float32)
            out.append(self.ge2e.embed_utterance(self.model, wav))
        return F.normalize(torch.stack(out).float(), dim=-1)


class WavLMEmbedder:
    def __init__(self, path: str, device: str = "cpu"):
        from transformers import AutoFeatureExtractor, WavLMForXVector

        from alignflow.sdk.weights import pretrained_source

        source = pretrained_source(
            path, "reward.path", "config.json", "a local WavLMForXVector folder"
        )
        self.extractor = AutoFeatureExtractor.from_pretrained(source)
        self.model = WavLMForXVector.from_pretrained(source).to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, audio: Sequence[np.ndarray]) -> torch.Tensor:
        inputs = self.extractor(
            [a.astype(np.float32) for a in audio],
            sampling_rate=EMBED_RATE,
            padding=True,
            return_tensors="pt",
            return_attention_mask=True,
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return F.normalize(self.model(**inputs).embeddings.float().cpu(), dim=-1)


BACKENDS = {"resemblyzer": ResemblyzerEmbedder, "wavlm": WavLMEmbedder}


class SpeakerSimilarity:
    """score = cos(embedding(generated), embedding(reference audio)), the reference read
    from the ``ref_audio`` metadata column (relative to ``audio_root``); component ``sim``."""

    modality = "speech"

    def __init__(
        self,
        backend: str = "resemblyzer",
        path: str = "",
        audio_root: str = "",
        device: str = "cpu",
    ):
        if backend not in BACKENDS:
            raise ConfigError("reward.backend", backend, f"one of {sorted(BACKENDS)}")
        if backend == "wavlm" and not path:
            raise ConfigError(
                "reward.path",
                path,
                "a local WavLMForXVector folder or hub id for the wavlm backend",
            )
        self.embed = (
            BACKENDS[backend](path, device) if backend == "wavlm" else BACKENDS[backend](device)
        )
        self.references = ReferenceAudio(audio_root, EMBED_RATE)
        self._ref_cache: dict[Any, torch.Tensor] = {}

    def reference_embedding(self, meta: Mapping[str, Any]) -> torch.Tensor:
        path = self.references.path(meta)
        if path not in self._ref_cache:
            self._ref_cache[path] = self.embed([self.references(meta).samples[0].numpy()])[0]
        return self._ref_cache[path]

    def __call__(
        self, media: Waveform, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        generated = self.embed([x.numpy() for x in media.resample(EMBED_RATE).items()])
        refs = torch.stack([self.reference_embedding(m) for m in metadata])
        sim = (generated * refs).sum(-1)
        return RewardOutput(sim, {"sim": sim})
