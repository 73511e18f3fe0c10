"""Digit-classifier reward of the offline ``image_digits`` experiment (GenEval-style:
"does the image show what the prompt asked for").

A small CNN trained by :func:`train_digit_classifier` on the training split of
scikit-learn's digits (with noise and shift augmentation, so that it scores
generated images and not only clean scans), shipped as safetensors in
``assets/digit_classifier``. Score = probability of the prompted digit (the
``digit`` metadata column); component ``accuracy`` = 1 if the arg-max is that digit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.random import generator
from alignflow.sdk.rewards import RewardOutput

DEFAULT_DIR = Path(__file__).parent / "assets" / "digit_classifier"


class DigitClassifier(nn.Module):
    """[B, 1, 8, 8] in [0, 1] -> logits [B, 10]."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(2 * width * 16, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        self.width = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def save_classifier(model: DigitClassifier, folder: Path, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
    )
    (folder / "config.json").write_text(json.dumps({"width": model.width, **info}, indent=2) + "\n")


def load_classifier(path: str | Path = "") -> DigitClassifier:
    from safetensors.torch import load_file

    folder = Path(path) if path else DEFAULT_DIR
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(
            "reward.path",
            str(folder),
            "a folder with model.safetensors and config.json "
            "(scripts/build_toy_assets.py writes it)",
        )
    cfg = json.loads((folder / "config.json").read_text())
    model = DigitClassifier(cfg["width"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval().requires_grad_(False)


def train_digit_classifier(
    seed: int = 0, epochs: int = 60, width: int = 32
) -> tuple[DigitClassifier, float]:
    """Train on the digits' training split; returns the model and its test accuracy."""
    from alignflow.modalities.image.digits import load_digits

    x, y = load_digits("train")
    xt, yt = load_digits("test")
    torch.manual_seed(seed)
    model = DigitClassifier(width)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    g = generator(seed, "classifier")
    for _epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb = x[idx]
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            xb = (xb + 0.1 * torch.randn(xb.shape, generator=g)).clamp(0, 1)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    return model, acc


class DigitClassifierReward:
    modality = "image"

    def __init__(self, path: str = "", target_key: str = "digit"):
        self.model = load_classifier(path)
        self.target_key = target_key

    @torch.no_grad()
    def __call__(
        self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        try:
            target = torch.tensor([int(m[self.target_key]) for m in metadata])
        except (KeyError, TypeError, ValueError) as e:
            raise RewardError(
                f"digit_classifier: every prompt needs an integer {self.target_key!r} column "
                f"(got metadata {list(metadata[:1])})"
            ) from e
        images = media.float().cpu()
        if images.shape[1:] != (1, 8, 8):
            raise RewardError(
                f"digit_classifier: expects images [B, 1, 8, 8], got {tuple(images.shape)}"
            )
        probs = self.model(images).softmax(-1)
        score = probs.gather(1, target[:, None]).squeeze(1)
        return RewardOutput(score, {"accuracy": (probs.argmax(1) == target).float()})
