"""What the diffusers image adapters share: dtypes, attention backends, loading."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.weights import pretrained_source, read_json

log = logging.getLogger(__name__)

ATTENTION = ("auto", "sdpa", "xformers")


def set_attention(
    transformer: torch.nn.Module, backend: str, field: str = "policy.attention"
) -> str:
    """PyTorch SDPA (diffusers' default) or xformers' memory-efficient attention.
    ``auto`` takes xformers when it is installed (the ``gpu`` extra) and CUDA is there."""
    if backend not in ATTENTION:
        raise ConfigError(field, backend, f"one of {ATTENTION}")
    has_xformers = importlib.util.find_spec("xformers") is not None and torch.cuda.is_available()
    if backend == "xformers" and not has_xformers:
        raise ConfigError(
            field, backend, "'sdpa' or 'auto' (xformers needs CUDA and pip install alignflow[gpu])"
        )
    if backend == "xformers" or (backend == "auto" and has_xformers):
        transformer.enable_xformers_memory_efficient_attention()
        return "xformers"
    return "sdpa"


def vae_scale(source: str) -> int:
    """Pixels per latent cell of a diffusers pipeline's ``AutoencoderKL``, read from its
    config (no weights loaded): 2 ** (number of blocks - 1), as the pipelines compute it."""
    return 2 ** (len(read_json(source, "vae/config.json", "policy.path")["block_out_channels"]) - 1)


def check_multiple(field: str, value: int, multiple: int, why: str) -> None:
    if value < multiple or value % multiple:
        raise ConfigError(field, value, f"a positive multiple of {multiple} ({why})")


def load_pipeline(
    cls: Any, path: str, dtype: torch.dtype, field: str = "policy.path", **kwargs: Any
) -> Any:
    """``cls.from_pretrained(path)`` from a local folder in diffusers layout or a hub id;
    a missing folder is a config error that says so before the hub is tried."""
    import warnings

    source = pretrained_source(
        path, field, "model_index.json", f"a folder holding a {cls.__name__} in diffusers layout"
    )

    with warnings.catch_warnings():
        # diffusers >= 0.39 renamed torch_dtype to dtype; older ones only know torch_dtype.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return cls.from_pretrained(source, torch_dtype=dtype, **kwargs)


def save_components(folder: str | Path, policy: Any) -> None:
    """Write a diffusers-pipeline policy (SD3, Wan, and their tiny toys) in diffusers'
    folder layout: the whole pipeline when it came from one; else transformer/, one
    folder per other module, tokenizer/ (when the prompt encoder has one) and scheduler/."""
    if policy.pipeline is not None:
        policy.pipeline.save_pretrained(folder)  # holds the unwrapped transformer
        return
    folder = Path(folder)
    policy.transformer.save_pretrained(folder / "transformer")
    for name, module in policy.other_modules.items():
        module.save_pretrained(folder / name)
    tokenizer = getattr(policy.prompt_encoder, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder / "tokenizer")
    policy.scheduler.save_pretrained(folder / "scheduler")


def component_folder(path: str, default: Path, script: str) -> Path:
    """The folder of a toy policy saved by :func:`save_components` (``path``, or the
    shipped ``default``); a config error naming what is missing and ``script``, which
    regenerates the shipped one."""
    folder = Path(path) if path else default
    missing = [
        d
        for d in ("transformer", "text_encoder", "tokenizer", "scheduler")
        if not (folder / d).is_dir()
    ]
    if missing:
        raise ConfigError(
            "policy.path",
            str(folder),
            "a folder with transformer/, text_encoder/, tokenizer/ and "
            f"scheduler/ (missing {missing}); run {script} to regenerate it",
        )
    return folder
