"""Name -> component registries that import lazily.

A config names a component by a registered name (``pixel_sd3``) or by a dotted path
(``mypkg.rewards:MyReward``). Names map to dotted strings, so importing
``alignflow.sdk`` imports no adapter or reward module until a run asks for it.

A config must not be able to run arbitrary code by naming a callable: dotted paths
resolve only inside trusted module prefixes: ``alignflow.`` and whatever
:func:`trust` or the ``ALIGNFLOW_TRUSTED_MODULES`` environment variable
(comma-separated prefixes) add. Code that registers a component by name is trusted
by construction.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from alignflow.sdk.errors import ConfigError

_TRUSTED: set[str] = {"alignflow."}


def trust(prefix: str) -> None:
    """Allow dotted paths in modules starting with ``prefix`` (e.g. ``"mylab."``)."""
    _TRUSTED.add(prefix if prefix.endswith(".") else prefix + ".")


def _trusted(module: str) -> bool:
    env = [p.strip() for p in os.environ.get("ALIGNFLOW_TRUSTED_MODULES", "").split(",") if p.strip()]
    prefixes = _TRUSTED | {p if p.endswith(".") else p + "." for p in env}
    return any((module + ".").startswith(p) for p in prefixes)


def import_dotted(path: str, field: str = "component") -> Any:
    """Import ``"pkg.module:attr"`` or ``"pkg.module.attr"``."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise ConfigError(field, path, "a registered name or a dotted path 'package.module:attr'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(field, path, "an importable 'package.module:attr'", hint=str(e)) from e


class Registry:
    """Names of one kind of component (``kind`` is used in error messages)."""

    def __init__(self, kind: str, builtins: dict[str, str] | None = None):
        self.kind = kind
        self._entries: dict[str, Any] = dict(builtins or {})

    def register(self, name: str, target: Any = None) -> Any:
        """``registry.register("name", obj_or_dotted_path)``, or as a decorator."""
        if target is None:
            return lambda obj: self.register(name, obj) or obj
        self._entries[name] = target
        return target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def resolve(self, name: str, field: str | None = None) -> Any:
        """The component called ``name``: a registered name or a trusted dotted path."""
        field = field or f"{self.kind}.name"
        if not isinstance(name, str) or not name:
            raise ConfigError(field, name, f"one of {self.names()} or a dotted path")
        if name in self._entries:
            target = self._entries[name]
            return import_dotted(target, field) if isinstance(target, str) else target
        if "." not in name and ":" not in name:
            raise ConfigError(field, name, f"one of {self.names()} or a dotted path 'package.module:attr'")
        module = name.partition(":")[0] if ":" in name else name.rpartition(".")[0]
        if not _trusted(module):
            raise ConfigError(
                field, name, f"one of {self.names()} or a dotted path in a trusted module",
                hint="add its prefix with alignflow.sdk.registry.trust() or ALIGNFLOW_TRUSTED_MODULES",
            )
        return import_dotted(name, field)


POLICIES = Registry("policy", {
    "pixel_sd3": "alignflow.adapters.image.pixel:load_pixel_policy",
    "sd3": "alignflow.adapters.image.sd3:load_sd3_policy",
    "flux": "alignflow.adapters.image.flux:load_flux_policy",
    "f5_tts": "alignflow.adapters.speech.f5:load_f5_policy",
    "tiny_f5": "alignflow.adapters.speech.tiny:load_tiny_f5",
    "wan": "alignflow.adapters.video.wan:load_wan_policy",
    "shapes_wan": "alignflow.adapters.video.tiny:load_shapes_wan",
})
REWARDS = Registry("reward", {
    "digit_classifier": "alignflow.rewards.image.digits:DigitClassifierReward",
    "pickscore": "alignflow.rewards.image.clip:PickScoreReward",
    "clipscore": "alignflow.rewards.image.clip:CLIPScoreReward",
    "aesthetic": "alignflow.rewards.image.clip:AestheticReward",
    "ocr": "alignflow.rewards.image.ocr:OCRReward",
    "jpeg_compressibility": "alignflow.rewards.image.quality:JPEGCompressibility",
    "jpeg_incompressibility": "alignflow.rewards.image.quality:JPEGIncompressibility",
    "piqe": "alignflow.rewards.image.quality:PIQEReward",
    "wer": "alignflow.rewards.speech.asr:WERReward",
    "speaker_similarity": "alignflow.rewards.speech.speaker:SpeakerSimilarity",
    "dnsmos": "alignflow.rewards.speech.quality:DNSMOSReward",
    "video_flow": "alignflow.rewards.video.flow:VideoFlowReward",
    "clip_frame_consistency": "alignflow.rewards.video.frames:CLIPFrameConsistency",
    "per_frame": "alignflow.rewards.video.frames:PerFrame",
    "remote": "alignflow.rewards.remote:RemoteReward",
    "pref_winrate": "alignflow.rewards.group:PairwiseWinRate",
    "group_duplicates": "alignflow.rewards.group:GroupDuplicates",
})
ALGORITHMS = Registry("algorithm", {
    "flow_grpo": "alignflow.sdk.algorithms.flow_grpo:FlowGRPO",
    "flow_grpo_fast": "alignflow.sdk.algorithms.flow_grpo:FlowGRPOFast",
    "mixgrpo": "alignflow.sdk.algorithms.mixgrpo:MixGRPO",
    "mixgrpo_flash": "alignflow.sdk.algorithms.mixgrpo_flash:MixGRPOFlash",
    "dense_grpo": "alignflow.sdk.algorithms.dense_grpo:DenseGRPO",
    "dance_grpo": "alignflow.sdk.algorithms.dance_grpo:DanceGRPO",
    "diffusion_nft": "alignflow.sdk.algorithms.diffusion_nft:DiffusionNFT",
    "grpo_guard": "alignflow.sdk.algorithms.grpo_guard:GRPOGuard",
    "branch_grpo": "alignflow.sdk.algorithms.branch_grpo:BranchGRPO",
    "tree_grpo": "alignflow.sdk.algorithms.branch_grpo:TreeGRPO",
    "tempflow_grpo": "alignflow.sdk.algorithms.branch_grpo:TempFlowGRPO",
})
MEDIA_WRITERS = Registry("modality", {
    "image": "alignflow.modalities.image.io:ImageWriter",
    "speech": "alignflow.modalities.speech.io:SpeechWriter",
    "video": "alignflow.modalities.video.io:VideoWriter",
})
PRETRAIN_DATA = Registry("pretrain dataset", {
    "digits": "alignflow.modalities.image.digits:digits_dataset",
    "words": "alignflow.modalities.image.words:words_dataset",
    "sentences": "alignflow.modalities.speech.sentences:sentences_dataset",
    "shapes": "alignflow.modalities.video.shapes:shapes_dataset",
})


def builder(registry: Registry, name: str, field: str) -> Callable[..., Any]:
    obj = registry.resolve(name, field)
    if not callable(obj):
        raise ConfigError(field, name, f"a callable {registry.kind} builder, got {type(obj).__name__}")
    return obj
