"""A cheap image reward for adapter tests: mean brightness of the red channel."""

from alignflow.sdk.components import component


@component("reward")
class Redness:
    modality = "image"

    def __call__(self, media, prompts, metadata):
        return media[:, 0].flatten(1).mean(1).float()
