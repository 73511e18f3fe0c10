"""CLIP-based image rewards: PickScore, CLIPScore and the LAION aesthetic predictor.

All three embed images (and prompts) with a transformers ``CLIPModel`` and its
processor, loaded with ``from_pretrained`` from a local folder or, when online, a hub
id. Scoring conventions are those of the references:

- **PickScore** (Kirstain et al., arXiv 2305.01569; model ``yuvalkirstain/PickScore_v1``
  with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``):
  ``logit_scale.exp() * cos(image, prompt)``, divided by 26 as Flow-GRPO does, so
  that typical scores sit near 0.8-0.9.
- **CLIPScore**: ``scale * cos(image, prompt)``; with ``clamp_negative`` the
  negative part is cut at 0. scale 1 = plain cosine; 2.5 + clamp = Hessel et al.
  (arXiv 2104.08718); 100 + clamp = torchmetrics.
- **LAION aesthetic** (improved-aesthetic-predictor, "sac+logos+ava1-l14-linearMSE"):
  an MLP 768-1024-128-64-16-1 on the L2-normalised CLIP ViT-L/14 image embedding,
  raw scores about 1-10. The head loads from safetensors or, for the released
  ``.pth``, ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.weights import pretrained_source, resolve_dtype


def _features(out: Any) -> torch.Tensor:
    # transformers >= 5 returns an output object whose pooler_output is the projection
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPEmbedder:
    """A ``CLIPModel`` + processor: L2-normalised image and text embeddings."""

    def __init__(
        self,
        path: str,
        processor_path: str = "",
        device: str = "",
        dtype: str = "float32",
        field: str = "reward.path",
    ):
        from transformers import AutoModel, AutoProcessor

        source = pretrained_source(
            path, field, "config.json", "a folder holding a CLIPModel saved with save_pretrained"
        )
        torch_dtype = resolve_dtype(dtype, "reward.dtype")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = (
            AutoModel.from_pretrained(source, dtype=torch_dtype)
            .to(self.device)
            .eval()
            .requires_grad_(False)
        )
        self.processor = AutoProcessor.from_pretrained(processor_path or source)

    @torch.no_grad()
    def images(self, media: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, D] unit vectors (the processor resizes and crops)."""
        from alignflow.modalities.frames import to_uint8

        pixels = self.processor(images=list(to_uint8(media)), return_tensors="pt")["pixel_values"]
        emb = _features(
            self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        )
        return nn.functional.normalize(emb.float(), dim=-1)

    @torch.no_grad()
    def texts(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = self.processor(text=list(prompts), padding=True, truncation=True, return_tensors="pt")
        emb = _features(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device),
            )
        )
        return nn.functional.normalize(emb.float(), dim=-1)


class PickScoreReward:
    modality = "image"

    def __init__(
        self,
        path: str = "yuvalkirstain/PickScore_v1",
        processor_path: str = "",
        scale: float = 1 / 26,
        device: str = "",
        dtype: str = "float32",
    ):
        """``path``: the PickScore CLIP model; ``processor_path``: its processor
        (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``), default = ``path``."""
        self.clip = CLIPEmbedder(path, processor_path, device, dtype)
        self.scale = scale

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        cos = (self.clip.images(media) * self.clip.texts(prompts)).sum(-1)
        return self.clip.model.logit_scale.exp().float().cpu() * cos.cpu() * self.scale


class CLIPScoreReward:
    modality = "image"

    def __init__(
        self,
        path: str = "openai/clip-vit-large-patch14",
        scale: float = 1.0,
        clamp_negative: bool = False,
        device: str = "",
        dtype: str = "float32",
    ):
        self.clip = CLIPEmbedder(path, "", device, dtype)
        self.scale, self.clamp_negative = scale, clamp_negative

    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        cos = (self.clip.images(media) * self.clip.texts(prompts)).sum(-1).cpu()
        return self.scale * (cos.clamp_min(0) if self.clamp_negative else cos)


class AestheticHead(nn.Module):
    """The LAION improved aesthetic predictor's MLP (same module names as the release,
    so its state dict loads as is)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds).squeeze(-1)


def load_aesthetic_head(path: str | Path) -> AestheticHead:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            "reward.head_path",
            str(path),
            "the aesthetic MLP weights (.safetensors, or the released .pth)",
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    head = AestheticHead(state["layers.0.weight"].shape[1])
    head.load_state_dict(state)
    return head.eval().requires_grad_(False)


class AestheticReward:
    modality = "image"

    def __init__(
        self,
        head_path: str,
        clip_path: str = "openai/clip-vit-large-patch14",
        device: str = "",
        dtype: str = "float32",
    ):
        head = load_aesthetic_head(head_path)
        self.clip = CLIPEmbedder(clip_path, "", device, dtype, field="reward.clip_path")
        self.head = head.to(self.clip.device)

    @torch.no_grad()
    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        return self.head(self.clip.images(media)).float().cpu()
