"""Rewards that misbehave, for the trainer's handling of bad reward output."""

import torch

from alignflow.sdk.components import component


@component("reward")
class NaNForOddSamples:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        scores = torch.rand(len(prompts))
        scores[1::2] = float("nan")
        return scores


@component("reward")
class WrongLength:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return torch.zeros(len(prompts) + 1)


@component("reward")
class Infinite:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return [float("inf")] * len(prompts)


@component("reward")
class Text:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return "great"


@component("reward")
class SpeechOnly:
    modality = "speech"

    def __call__(self, media, prompts, metadata):
        return torch.zeros(len(prompts))


@component("reward")
class Raises:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        raise RuntimeError("CUDA out of memory (pretend)")


@component("reward")
class SlowFirstCall:
    """Hangs for 3 s on its first call, then answers at once."""

    modality = "image"

    def __init__(self):
        self.calls = 0

    def __call__(self, media, prompts, metadata):
        import time

        self.calls += 1
        if self.calls == 1:
            time.sleep(3)
        return torch.ones(len(prompts))


@component("reward")
class FailsOnRankOne:
    """Raises on the process of rank 1 only (multi-process tests)."""

    modality = "image"

    def __call__(self, media, prompts, metadata):
        import os

        if os.environ.get("RANK") == "1":
            raise RuntimeError("only rank 1 fails")
        return torch.ones(len(prompts))


@component("reward")
class HugeInt:
    """A Python int no float can hold."""

    modality = "image"

    def __call__(self, media, prompts, metadata):
        return [10**400] * len(prompts)


@component("reward")
class HugeFloat:
    """Finite in float64, inf in float32."""

    modality = "image"

    def __call__(self, media, prompts, metadata):
        return torch.full((len(prompts),), 1e300, dtype=torch.float64)
