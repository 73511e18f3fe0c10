"""Where pretrained weights come from (a local folder or, when online, a hub id) and
in which dtype: the checks every adapter and reward makes before loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, field: str = "policy.dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(field, name, f"one of {sorted(DTYPES)}")
    return DTYPES[name]


def pretrained_source(path: str, field: str, marker: str, what: str) -> str:
    """``path`` as ``from_pretrained`` should get it: an expanded local folder, which must
    hold ``marker`` (``what`` names the folder in the error), or a hub id whose
    ``marker`` file can be fetched (or is cached). Either failure is a one-line config
    error before any weights load."""
    if not path:
        raise ConfigError(field, path, f"{what} or a hub id")
    local = Path(path).expanduser()
    if not (path.startswith((".", "/", "~")) or local.exists()):
        _fetch(path, marker, field, what)
        return path
    if not (local / marker).is_file():
        raise ConfigError(field, path, f"{what} ({marker})")
    return str(local)


def read_json(source: str, file: str, field: str) -> dict[str, Any]:
    """A small JSON file (a model's config) of a source checked by
    :func:`pretrained_source`: read from the folder, or fetched from the hub."""
    local = Path(source) / file
    path = local if local.is_file() else Path(_fetch(source, file, field, "a model with " + file))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(field, source, f"a model whose {file} is JSON", hint=str(e)) from e


def _fetch(repo: str, file: str, field: str, what: str) -> str:
    """The local path of ``file`` of hub repo ``repo`` (downloaded, or from the cache)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    try:
        return hf_hub_download(repo, file)
    except HFValidationError as e:
        raise ConfigError(
            field, repo, f"{what}: an existing local folder or a hub id 'org/name'"
        ) from e
    except (
        Exception
    ) as e:  # offline, unknown repo, gated, missing file: all mean "cannot load this"
        reason = " ".join(str(e).split())[:200]
        raise ConfigError(
            field,
            repo,
            f"{what}: a local folder, or a hub id that is reachable and has {file}",
            hint=f"{type(e).__name__}: {reason}",
        ) from e
