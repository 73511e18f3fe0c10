"""Edit rewards: was the instruction followed, and was the rest of the source kept?

An edit prompt row names its source image (``source``, relative paths against
``source_root``) and may name a mask (``mask``: a grayscale image, white where the
edit may change pixels, black where the source must be kept).

- :class:`SourceConsistency` scores how much of the source an edit keeps, in [0, 1]:
  ``pixels``: 1 - the mean absolute difference over the kept pixels;
  ``clip``: the cosine of the CLIP image embeddings (a real ``CLIPModel`` from a local
  folder) of edit and source, both with the editable region filled with gray, cut at 0;
  ``ink``: for edits that change a shape but must keep where and how strongly it is
  drawn (the digits toy): the ink's brightness (mean of its brightest tenth) and its
  centroid against the source's, ``(1 - |d gain| / gain_tolerance)+ * (1 - |d centroid|
  / shift_tolerance)+``, on the mean over channels.
- :class:`EditReward` combines it with any declared instruction reward (OCR for text
  edits, the digit classifier for the toy, ...) whose scores lie in [0, 1]:
  ``instruction * consistency ** power``. Neither exploit pays: returning the source
  unchanged keeps consistency 1 but scores the instruction reward of the unedited
  source; ignoring the source satisfies the instruction but loses the consistency
  factor. Both factors, the instruction's gain over the source and the instruction
reward's own components (``instruction_<name>``) are logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.rewards import RewardOutput

MEASURES = ("pixels", "clip", "ink")


class EditSources:
    """Each row's source image (and mask) resized to the edit's size: [B, C, H, W] and
    [B, 1, H, W] in [0, 1] (mask 1 = editable; all 0 without a ``mask`` column)."""

    def __init__(self, source_root: str = ""):
        from alignflow.modalities.sources import SourceMedia

        self.source_root = source_root
        # a path, or the image itself (an array, a PIL image): resized to the edit below
        self._sources = SourceMedia(
            "source",
            Path,
            source_root,
            what="image edit prompt",
            inline=lambda v: v,
            root_field="the reward's source_root (e.g. ${policy.source_root})",
        )
        self._read: dict[tuple[Path, tuple[int, int], str], torch.Tensor] = {}  # file, once

    def __call__(
        self, metadata: Sequence[Mapping[str, Any]], size: tuple[int, int], channels: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sources with ``channels`` (1: grayscale, 3: RGB) and masks at ``size``."""
        from alignflow.modalities.image.io import image_from_value, read_image

        def image(value: Any, mode: str = "RGB" if channels == 3 else "L") -> torch.Tensor:
            if not isinstance(value, Path):
                return image_from_value(value, size, mode)
            key = (value, tuple(size), mode)
            if key not in self._read:  # every group member and iteration reuses it
                self._read[key] = read_image(value, size, mode)
            return self._read[key]

        sources, masks = [], []
        for meta in metadata:
            sources.append(image(self._sources(meta)))
            if meta.get("mask") is not None:
                masks.append(image(self._sources({**meta, "source": meta["mask"]}), "L").round())
            else:
                masks.append(torch.zeros(1, *size))
        return torch.stack(sources), torch.stack(masks)


class SourceConsistency:
    """How much of its source an edit keeps, in [0, 1] (module doc).

    Args:
        source_root: the folder relative ``source`` / ``mask`` paths resolve against.
        measure: ``pixels`` or ``clip``.
        path, processor_path: the ``CLIPModel`` (and processor) folder for ``clip``.
    """

    modality = "image"

    def __init__(
        self,
        source_root: str = "",
        measure: str = "pixels",
        path: str = "",
        processor_path: str = "",
        gain_tolerance: float = 0.25,
        shift_tolerance: float = 2.0,
    ):
        if measure not in MEASURES:
            raise ConfigError("reward.measure", measure, f"one of {MEASURES}")
        if measure == "clip" and not path:
            raise ConfigError("reward.path", path, "a CLIPModel folder for measure 'clip'")
        for name, value in (
            ("gain_tolerance", gain_tolerance),
            ("shift_tolerance", shift_tolerance),
        ):
            if not value > 0:
                raise ConfigError(f"reward.{name}", value, "a float > 0")
        self.measure, self.sources = measure, EditSources(source_root)
        self.gain_tolerance, self.shift_tolerance = gain_tolerance, shift_tolerance
        self.clip = None
        if measure == "clip":
            from alignflow.rewards.image.clip import CLIPEmbedder

            self.clip = CLIPEmbedder(path, processor_path)

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        edit = media.float().cpu()
        source, mask = self.sources(metadata, tuple(edit.shape[-2:]), edit.shape[1])
        kept = 1 - mask
        if self.measure == "pixels":
            diff = ((edit - source).abs() * kept).flatten(1).sum(1)
            return 1 - diff / (kept.flatten(1).sum(1) * edit.shape[1]).clamp_min(1)
        if self.measure == "ink":
            (g_e, c_e), (g_s, c_s) = ink(edit), ink(source)
            keep_gain = (1 - (g_e - g_s).abs() / self.gain_tolerance).clamp_min(0)
            keep_place = (1 - (c_e - c_s).norm(dim=-1) / self.shift_tolerance).clamp_min(0)
            return keep_gain * keep_place
        gray = lambda x: x * kept + 0.5 * mask  # noqa: E731  (the editable region hidden)
        cos = (self.clip.images(gray(edit)) * self.clip.images(gray(source))).sum(-1).cpu()
        return cos.clamp_min(0)


def _source_key(meta: Mapping[str, Any]) -> Any:
    """What identifies a row's source: its path, or the inline image object itself."""
    value = meta.get("source")
    return value if isinstance(value, str) else id(value)


def ink(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ink brightness (the mean of its brightest tenth of pixels) and ink
    centroid (row, column, in pixels), over the mean of its channels."""
    x = images.float().mean(1)  # [B, H, W]
    flat = x.flatten(1)
    gain = flat.topk(max(1, flat.shape[1] // 10), dim=1).values.mean(1)
    rows = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1)
    cols = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1)
    mass = flat.sum(1).clamp_min(1e-6)
    centroid = torch.stack([(x * rows).flatten(1).sum(1), (x * cols).flatten(1).sum(1)], -1)
    return gain, centroid / mass[:, None]


class EditReward:
    """``instruction * consistency ** power`` (module doc).

    Args:
        instruction: the instruction reward as a component spec, ``{name: ocr, ...}``;
            its scores must lie in [0, 1].
        consistency: :class:`SourceConsistency`'s arguments.
        power: how strongly consistency weighs (0 = not at all).
    """

    modality = "image"

    def __init__(
        self,
        instruction: Mapping[str, Any],
        consistency: Mapping[str, Any] | None = None,
        power: float = 1.0,
    ):
        from alignflow.sdk.components import builder
        from alignflow.sdk.config.schema import check_arguments, split_component

        name, args = split_component(dict(instruction), "reward.instruction")
        build = builder("reward", name, "reward.instruction.name")
        check_arguments(build, args, "reward.instruction")
        self.instruction = build(**args)
        if getattr(self.instruction, "modality", "image") not in ("image", "any"):
            raise ConfigError(
                "reward.instruction.name", name, "a reward of images (or of any modality)"
            )
        self.consistency = SourceConsistency(**dict(consistency or {}))
        if not power >= 0:
            raise ConfigError("reward.power", power, "a float >= 0")
        self.power = power

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        from alignflow.sdk.errors import RewardError
        from alignflow.sdk.rewards import check_output

        def instruction(images: torch.Tensor, prompts, metadata) -> RewardOutput:
            out = check_output(self.instruction(images, prompts, metadata), len(images), "edit")
            scores = out.scores.float().cpu()
            if ((scores < -1e-6) | (scores > 1 + 1e-6)).any():
                raise RewardError(
                    f"edit reward: the instruction reward's scores must lie in [0, 1]; got "
                    f"{scores.min():.3g}..{scores.max():.3g}"
                )
            return RewardOutput(scores.clamp(0, 1), out.components)

        follows = instruction(media, prompts, metadata)
        keeps = self.consistency(media, prompts, metadata)
        # the unedited sources' instruction scores: once per (prompt, source), not once
        # per group member
        position: dict[tuple, int] = {}  # (prompt, source) -> its place among the unique
        firsts, slot = [], []  # each unique one's first row; each row's unique one
        for i, (p, m) in enumerate(zip(prompts, metadata)):
            key = (p, _source_key(m))
            if key not in position:
                position[key] = len(firsts)
                firsts.append(i)
            slot.append(position[key])
        meta = [metadata[i] for i in firsts]
        source, _ = self.consistency.sources(meta, tuple(media.shape[-2:]), media.shape[1])
        unedited = instruction(
            source.to(media.device, media.dtype), [prompts[i] for i in firsts], meta
        ).scores
        gain = follows.scores - unedited[torch.tensor(slot)]
        scores = follows.scores * keeps.clamp(0, 1) ** self.power
        # the instruction reward's own components too (the digit classifier's accuracy)
        inner = {f"instruction_{k}": v.float().cpu() for k, v in follows.components.items()}
        return RewardOutput(
            scores,
            {"instruction": follows.scores, "consistency": keeps, "instruction_gain": gain} | inner,
        )
