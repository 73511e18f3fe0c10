"""Where pretrained weights come from (a local folder or, when online, a hub id) and
in which dtype: the checks every adapter and reward makes before loading."""

from __future__ import annotations

from pathlib import Path

import torch

from alignflow.sdk.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, field: str = "policy.dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(field, name, f"one of {sorted(DTYPES)}")
    return DTYPES[name]


def pretrained_source(path: str, field: str, marker: str, what: str) -> str:
    """``path`` as ``from_pretrained`` should get it: an expanded local folder, which must
    hold ``marker`` (``what`` names the folder in the error), or a hub id. A path that
    looks local but is not a model folder is a config error before the hub is tried."""
    if not path:
        raise ConfigError(field, path, f"{what} or a hub id")
    local = Path(path).expanduser()
    if not (path.startswith((".", "/", "~")) or local.exists()):
        return path
    if not (local / marker).is_file():
        raise ConfigError(field, path, f"{what} ({marker})")
    return str(local)
