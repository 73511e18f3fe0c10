"""What the diffusers image adapters share: dtypes, attention backends, loading."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.weights import pretrained_source

log = logging.getLogger(__name__)

ATTENTION = ("auto", "sdpa", "xformers")


def set_attention(transformer: torch.nn.Module, backend: str, field: str = "policy.attention") -> str:
    """PyTorch SDPA (diffusers' default) or xformers' memory-efficient attention.
    ``auto`` takes xformers when it is installed (the ``gpu`` extra) and CUDA is there."""
    if backend not in ATTENTION:
        raise ConfigError(field, backend, f"one of {ATTENTION}")
    has_xformers = importlib.util.find_spec("xformers") is not None and torch.cuda.is_available()
    if backend == "xformers" and not has_xformers:
        raise ConfigError(field, backend, "'sdpa' or 'auto' (xformers needs CUDA and pip install alignflow[gpu])")
    if backend == "xformers" or (backend == "auto" and has_xformers):
        transformer.enable_xformers_memory_efficient_attention()
        return "xformers"
    return "sdpa"


def load_pipeline(cls: Any, path: str, dtype: torch.dtype, field: str = "policy.path", **kwargs: Any) -> Any:
    """``cls.from_pretrained(path)`` from a local folder in diffusers layout or a hub id;
    a missing folder is a config error that says so before the hub is tried."""
    import warnings

    source = pretrained_source(path, field, "model_index.json", f"a folder holding a {cls.__name__} in diffusers layout")

    with warnings.catch_warnings():
        # diffusers >= 0.39 renamed torch_dtype to dtype; older ones only know torch_dtype.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return cls.from_pretrained(source, torch_dtype=dtype, **kwargs)
