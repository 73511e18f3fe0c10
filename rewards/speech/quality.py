"""Speech quality: DNSMOS P.835 (Reddy et al., arXiv 2110.01763) through ``speechmos``
(the ONNX models ship in its wheel: offline).

A non-intrusive MOS predictor trained on noisy/processed speech: it drops with noise
and artefacts; it is not a naturalness score. Score = the chosen MOS (1-5, default
``ovrl_mos``); components ``sig``, ``bak``, ``ovrl`` and ``p808``. Useful as a
companion term that stops WER/SIM optimisation from buying intelligibility with noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from alignflow.modalities.speech.audio import Waveform
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.extras import require
from alignflow.sdk.rewards import RewardOutput

KEYS = {"ovrl_mos": "ovrl", "sig_mos": "sig", "bak_mos": "bak", "p808_mos": "p808"}


class DNSMOSReward:
    modality = "speech"

    def __init__(self, score: str = "ovrl_mos"):
        if score not in KEYS:
            raise ConfigError("reward.score", score, f"one of {sorted(KEYS)}")
        self.dnsmos = require("speechmos.dnsmos", "reward.name", "dnsmos", "the DNSMOS reward")
        self.score = score

    def __call__(
        self, media: Waveform, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        rows = [
            self.dnsmos.run(x.clamp(-1, 1).numpy(), sr=16000) for x in media.resample(16000).items()
        ]
        comps = {short: torch.tensor([float(r[key]) for r in rows]) for key, short in KEYS.items()}
        return RewardOutput(comps[KEYS[self.score]].clone(), comps)
