"""Rewards that misbehave, for the trainer's handling of bad reward output."""

import torch


class NaNForOddSamples:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        scores = torch.rand(len(prompts))
        scores[1::2] = float("nan")
        return scores


class WrongLength:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return torch.zeros(len(prompts) + 1)


class Infinite:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return [float("inf")] * len(prompts)


class Text:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return "great"


class SpeechOnly:
    modality = "speech"

    def __call__(self, media, prompts, metadata):
        return torch.zeros(len(prompts))


class Raises:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        raise RuntimeError("CUDA out of memory (pretend)")


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


class FailsOnRankOne:
    """Raises on the process of rank 1 only (multi-process tests)."""

    modality = "image"

    def __call__(self, media, prompts, metadata):
        import os

        if os.environ.get("RANK") == "1":
            raise RuntimeError("only rank 1 fails")
        return torch.ones(len(prompts))
