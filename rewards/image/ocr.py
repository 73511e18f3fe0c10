"""OCR reward for text rendering (Flow-GRPO's formula), with real offline engines.

Target: the ``target_text`` metadata column if the prompt file has one, else the
first quoted span of the prompt (``a sign that says "open"`` -> ``open``). Both the
target and the recognised text are lower-cased with spaces removed; then

    reward = 1 if target is contained in the recognised text,
             else 1 - min(Levenshtein(recognised, target), len(target)) / len(target)

(Flow-GRPO, arXiv 2505.05470, its OCR reward). A prompt without a target scores NaN
("not applicable").

Engines (both ship their models; nothing downloads):
- ``rapidocr`` (default): PaddleOCR models in ONNX run by onnxruntime in-process.
  ``detect=False`` runs recognition only, on the whole image as one text line: right
  for images that are a rendered word, and ~40x faster than detection + recognition.
- ``tesseract``: Debian's ``tesseract-ocr`` through pytesseract (page segmentation
  mode 7, a single text line, unless ``detect``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.rewards import RewardOutput

ENGINES = ("rapidocr", "tesseract")
_QUOTED = re.compile(r"[\"“”'‘’](.+?)[\"“”'‘’]")


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_score(recognised: str, target: str) -> float:
    """Flow-GRPO's OCR reward of one image."""
    rec, tgt = recognised.replace(" ", "").lower(), target.replace(" ", "").lower()
    if not tgt:
        return float("nan")
    if tgt in rec:
        return 1.0
    return 1.0 - min(levenshtein(rec, tgt), len(tgt)) / len(tgt)


def target_of(prompt: str, metadata: Mapping[str, Any], key: str) -> str:
    if metadata.get(key):
        return str(metadata[key])
    m = _QUOTED.search(prompt)
    return m.group(1) if m else ""


class OCRReward:
    modality = "image"

    def __init__(self, engine: str = "rapidocr", detect: bool = False, target_key: str = "target_text",
                 min_height: int = 32):
        """``min_height``: images are upscaled (nearest) to at least this many pixels
        high before recognition; engines are tuned for text lines of ~32-48 px."""
        if engine not in ENGINES:
            raise ConfigError("reward.engine", engine, f"one of {ENGINES}")
        self.engine, self.detect, self.target_key, self.min_height = engine, detect, target_key, min_height
        if engine == "rapidocr":
            try:
                from rapidocr import RapidOCR
            except ImportError as e:
                raise ConfigError("reward.engine", engine, "rapidocr installed (pip install 'alignflow[image]')") from e
            self._rapid = RapidOCR(params={"Global.log_level": "error"})
        else:
            import shutil

            if shutil.which("tesseract") is None:
                raise ConfigError("reward.engine", engine, "the tesseract binary (apt-get install tesseract-ocr "
                                  "tesseract-ocr-eng) and pytesseract")

    def read(self, image: np.ndarray) -> str:
        """Text in one uint8 [H, W, 3] image."""
        h = image.shape[0]
        if h < self.min_height:
            k = -(-self.min_height // h)
            image = image.repeat(k, axis=0).repeat(k, axis=1)
        if self.engine == "rapidocr":
            out = self._rapid(image, use_det=self.detect, use_cls=False, use_rec=True)
            return " ".join(out.txts or ())
        import pytesseract

        return pytesseract.image_to_string(image, config="" if self.detect else "--psm 7").strip()

    def __call__(self, media: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]) -> RewardOutput:
        from alignflow.modalities.image.io import to_uint8

        images = to_uint8(media)
        scores, exact = [], []
        for image, prompt, meta in zip(images, prompts, metadata):
            target = target_of(prompt, meta, self.target_key)
            score = ocr_score(self.read(image), target) if target else float("nan")
            scores.append(score)
            exact.append(float(score == 1.0) if target else float("nan"))
        return RewardOutput(torch.tensor(scores), {"exact": torch.tensor(exact)})
