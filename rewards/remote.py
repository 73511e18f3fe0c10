"""Remote rewards: a reward model served by its own process, called over HTTP.

Heavy reward models (a VLM judge, a large ASR) often want their own process, GPU or
Python environment. ``alignflow serve-reward reward=NAME`` serves any declared reward
(:mod:`alignflow.rewards.server`); ``reward=remote`` (:class:`RemoteReward`) calls it
from training. This module holds the wire format and the client.

Wire format, both ways: one safetensors file (never pickle: parsing it runs no code).

- request ``POST /score``: tensor ``media`` (float32: images [B, C, H, W], speech
  [B, N] with optional int64 ``lengths`` [B], video frames [B, F, C, H, W]) and
  ``groups`` [B] (int64, for groupwise rewards); the safetensors header metadata holds
  ``modality``, ``sample_rate`` (speech), ``fps`` (video), ``prompts`` (a JSON list of B
  strings) and ``metadata`` (a JSON list of B objects).
- answer 200: tensors ``scores`` [B] and ``component.<name>`` [B], float32.
- answer 4xx (the request is wrong: size, format, types, shapes, modality; 422: it
  breaks the reward's contract, e.g. metadata the reward needs is missing), 500 (the
  reward failed at run time) or 503 (busy) with a JSON body ``{"error": "..."}``; the
  server keeps serving.
- ``GET /health``: ``{"modality": ..., "groupwise": ..., "reward": NAME, "heads": {...}}``
  (``heads``: a multi-head reward's head weights, so that each head of a served reward
  still gets its own advantage).

The client retries connection failures, timeouts and 5xx answers with exponential
backoff until ``deadline`` seconds have passed, so a training run survives the server
being restarted; then it raises :class:`RewardFailure`, which the trainer's
``train.reward_failures`` policy handles. A 4xx is not retried (the same request would
fail again) and raises :class:`RewardError` with the server's message. With a token
(``token:`` or the ``ALIGNFLOW_REWARD_TOKEN`` environment variable) it sends
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from alignflow.sdk.errors import ConfigError, RewardError, RewardFailure
from alignflow.sdk.rewards import RewardOutput

log = logging.getLogger(__name__)
MEDIA_DIMS = {"image": 4, "speech": 2, "video": 5}
TOKEN_ENV = "ALIGNFLOW_REWARD_TOKEN"


class BadRequest(ValueError):
    """What is wrong with a request, answered with status ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- encoding


def encode_request(
    media: Any,
    prompts: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    modality: str,
    groups: torch.Tensor | None = None,
) -> bytes:
    tensors, header = (
        {},
        {
            "modality": modality,
            "prompts": json.dumps(list(prompts)),
            "metadata": json.dumps([dict(m) for m in metadata], default=str),
        },
    )
    if modality == "speech":
        tensors["media"] = media.samples.detach().float().cpu().contiguous()
        header["sample_rate"] = str(int(media.sample_rate))
        if media.lengths is not None:
            tensors["lengths"] = (
                torch.as_tensor(media.lengths, dtype=torch.int64).cpu().contiguous()
            )
    elif modality == "video":
        tensors["media"] = media.frames.detach().float().cpu().contiguous()
        header["fps"] = repr(float(media.fps))
    else:
        tensors["media"] = media.detach().float().cpu().contiguous()
    if groups is not None:
        tensors["groups"] = torch.as_tensor(groups, dtype=torch.int64).cpu().contiguous()
    return st_save(tensors, metadata=header)


MAX_JSON_DEPTH, MAX_NUMBER_CHARS, MAX_HEADER_BYTES = 32, 40, 16 * 2**20


def bounded_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` for what a client sent: nesting at most MAX_JSON_DEPTH deep,
    numbers at most MAX_NUMBER_CHARS characters, no NaN or Infinity; else BadRequest."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"{what} is not UTF-8") from e
    # the nesting depth, counted before parsing (the parser recurses): brackets outside strings
    brackets = re.findall(r"[\[\]{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text))
    if (
        max(itertools.accumulate(1 if b in "[{" else -1 for b in brackets), default=0)
        > MAX_JSON_DEPTH
    ):
        raise BadRequest(f"{what}: JSON nested more than {MAX_JSON_DEPTH} deep")

    def number(kind: type) -> Any:
        def parse(s: str) -> Any:
            if len(s) > MAX_NUMBER_CHARS or not math.isfinite(float(s)):
                raise BadRequest(
                    f"{what}: the number {s[:MAX_NUMBER_CHARS]!r} is too long or not finite"
                )
            return kind(s)

        return parse

    def constant(name: str) -> Any:
        raise BadRequest(f"{what}: {name} is not JSON")

    try:
        return json.loads(
            text, parse_int=number(int), parse_float=number(float), parse_constant=constant
        )
    except json.JSONDecodeError as e:
        raise BadRequest(f"{what} is not JSON: {e}") from e


def safetensors_header(body: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors payload, checked for size before parsing."""
    if len(body) < 8:
        raise BadRequest(f"body of {len(body)} bytes is not a safetensors file")
    (n,) = struct.unpack("<Q", body[:8])
    if n > len(body) - 8:
        raise BadRequest(f"safetensors header claims {n} bytes, the body has {len(body) - 8}")
    if n > MAX_HEADER_BYTES:
        raise BadRequest(
            f"safetensors header of {n} bytes: at most {MAX_HEADER_BYTES} (prompts and metadata)"
        )
    header = bounded_json(body[8 : 8 + n], "the safetensors header")
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise BadRequest("safetensors __metadata__ must map names to strings")
    return meta


def decode_request(
    body: bytes, modality: str, max_batch: int
) -> tuple[Any, list[str], list[dict], torch.Tensor | None]:
    """(media, prompts, metadata, groups) from a request body, or :class:`BadRequest`."""
    meta = safetensors_header(body)
    try:
        tensors = st_load(body)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise BadRequest(f"not a safetensors file: {e}") from e
    if meta.get("modality") != modality:
        raise BadRequest(
            f"modality {meta.get('modality')!r}: this server scores {modality!r} media"
        )
    unknown = sorted(set(tensors) - {"media", "lengths", "groups"})
    if unknown or "media" not in tensors:
        raise BadRequest(
            f"tensors {sorted(tensors)}: expected 'media' and optionally 'lengths', 'groups'"
        )
    media = tensors["media"]
    dims = MEDIA_DIMS.get(modality)
    if media.dtype != torch.float32 or (dims is not None and media.ndim != dims):
        raise BadRequest(
            f"media {media.dtype} {tuple(media.shape)}: expected float32 with {dims} dimensions "
            f"for {modality} (batch first)"
        )
    B = media.shape[0]
    if not 1 <= B <= max_batch or media.numel() == 0:
        raise BadRequest(
            f"batch of {B} (media {tuple(media.shape)}): expected 1 to {max_batch} non-empty "
            "samples"
        )
    if not torch.isfinite(media).all():
        raise BadRequest("media has NaN or inf values")
    prompts, metadata = (
        bounded_json(meta.get("prompts", ""), "prompts"),
        bounded_json(meta.get("metadata", ""), "metadata"),
    )
    if not (
        isinstance(prompts, list) and all(isinstance(p, str) for p in prompts) and len(prompts) == B
    ):
        raise BadRequest(f"prompts: expected a JSON list of {B} strings")
    if not (
        isinstance(metadata, list)
        and all(isinstance(m, dict) for m in metadata)
        and len(metadata) == B
    ):
        raise BadRequest(f"metadata: expected a JSON list of {B} objects")
    groups = tensors.get("groups")
    if groups is not None and (groups.dtype != torch.int64 or groups.shape != (B,)):
        raise BadRequest(f"groups {groups.dtype} {tuple(groups.shape)}: expected int64 [{B}]")
    if modality == "speech":
        from alignflow.modalities.speech.audio import Waveform

        try:
            rate = int(meta.get("sample_rate", ""))
        except ValueError as e:
            raise BadRequest(f"sample_rate {meta.get('sample_rate')!r}: expected an int") from e
        lengths = tensors.get("lengths")
        if not 8000 <= rate <= 192000:
            raise BadRequest(f"sample_rate {rate}: expected 8000 to 192000")
        if lengths is not None and (
            lengths.dtype != torch.int64
            or lengths.shape != (B,)
            or (lengths < 1).any()
            or (lengths > media.shape[1]).any()
        ):
            raise BadRequest(f"lengths: expected int64 [{B}] in 1..{media.shape[1]}")
        media = Waveform(media, rate, lengths)
    if modality == "video":
        from alignflow.modalities.video.video import Video

        try:
            fps = float(meta.get("fps", ""))
        except ValueError as e:
            raise BadRequest(f"fps {meta.get('fps')!r}: expected a number") from e
        if not 0 < fps <= 1000 or media.shape[2] not in (1, 3):
            raise BadRequest(
                f"video of {tuple(media.shape)} at fps {fps}: expected [B, F, 1 or 3, H, W], fps "
                "in (0, 1000]"
            )
        media = Video(media, fps)
    return media, prompts, metadata, groups


def encode_answer(out: RewardOutput) -> bytes:
    tensors = {"scores": out.scores.float().contiguous()}
    tensors.update({f"component.{k}": v.float().contiguous() for k, v in out.components.items()})
    return st_save(tensors)


def decode_answer(body: bytes) -> RewardOutput:
    try:
        tensors = st_load(body)
    except Exception as e:
        raise RewardError(f"remote reward: the answer is not a safetensors file ({e})") from e
    if "scores" not in tensors:
        raise RewardError(f"remote reward: the answer has no 'scores' (tensors {sorted(tensors)})")
    comps = {
        k.removeprefix("component."): v for k, v in tensors.items() if k.startswith("component.")
    }
    # shapes are checked by the trainer's check_output
    return RewardOutput(tensors["scores"], comps)


# ---------------------------------------------------------------- client


class RemoteReward:
    """A reward computed by ``alignflow serve-reward`` at ``url``. The modality (and
    whether the reward is groupwise) comes from the server's /health at construction,
    waiting up to ``deadline`` seconds for it to come up."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        timeout: float = 120.0,
        deadline: float = 600.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        token: str = "",
    ):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                "reward.url", url, "an http:// or https:// URL of `alignflow serve-reward`"
            )
        for field_name, value in (
            ("timeout", timeout),
            ("deadline", deadline),
            ("backoff", backoff),
        ):
            if not value > 0:
                raise ConfigError(f"reward.{field_name}", value, "seconds > 0")
        self.url, self.timeout, self.deadline = url.rstrip("/"), timeout, deadline
        self.backoff, self.max_backoff = backoff, max_backoff
        token = token or os.environ.get(TOKEN_ENV, "")
        self.headers = {
            "Content-Type": "application/octet-stream",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        }
        self.retries = 0  # failed attempts so far, for people reading a run
        info = json.loads(self._call("GET", "/health", None))
        self.modality, self.groupwise, self.name = (
            info["modality"],
            bool(info["groupwise"]),
            info.get("reward", ""),
        )
        self.heads = {str(k): float(v) for k, v in (info.get("heads") or {}).items()}

    def __call__(
        self,
        media: Any,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        groups: torch.Tensor | None = None,
    ) -> RewardOutput:
        body = encode_request(media, prompts, metadata, self.modality, groups)
        return decode_answer(self._call("POST", "/score", body))

    def _call(self, method: str, path: str, body: bytes | None) -> bytes:
        start, wait, last = time.monotonic(), self.backoff, ""
        while True:
            request = urllib.request.Request(
                self.url + path, data=body, method=method, headers=self.headers
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return answer.read()
            except urllib.error.HTTPError as e:
                message = _error_message(e)
                if e.code < 500:
                    raise RewardError(f"remote reward {self.url}{path}: {e.code} {message}") from e
                last = f"{e.code} {message}"
            except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            self.retries += 1
            if time.monotonic() - start + wait > self.deadline:
                raise RewardFailure(
                    f"remote reward {self.url}{path}: no answer within {self.deadline:g} s "
                    f"({self.retries} failed attempts, last: {last})"
                )
            log.warning("remote reward %s%s: %s; retrying in %.1f s", self.url, path, last, wait)
            time.sleep(wait)
            wait = min(wait * 2, self.max_backoff)


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        return json.loads(e.read()).get("error", "")
    except Exception:
        return e.reason or ""
