"""What the adapters share: dtypes, attention backends, loading, export and merging LoRA."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def memory_controls(
    pipe: Any,
    gradient_checkpointing: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
) -> None:
    """diffusers' own memory switches on a pipeline's parts: recompute each transformer
    block in the backward pass (activation memory O(1) blocks instead of O(layers), one
    more forward of compute), decode the VAE in spatial tiles / one image at a time."""
    if gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()


@contextmanager
def visiting(
    modules: Sequence[torch.nn.Module], device: torch.device, offload: bool
) -> Iterator[None]:
    """With ``offload``, ``modules`` (text encoders kept on the CPU) visit ``device`` for
    the block and go back to the CPU after it, also when it raises."""
    if offload:
        for m in modules:
            m.to(device)
    try:
        yield
    finally:
        if offload:
            for m in modules:
                m.to("cpu")


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


class DiffusersExport:
    """``alignflow export`` for a policy built on a diffusers transformer: the SD3, FLUX
    and Wan adapters and their tiny toys share it (``self.transformer``,
    ``self.pipeline`` when the policy came from a pipeline, ``self.save_pretrained``).

    - ``diffusers-lora``: the trained LoRA as the pipeline class's own
      ``save_lora_weights`` writes it, with peft's LoRA config (rank, alpha, targets) in
      the file's metadata, so that ``pipe.load_lora_weights(DIR)`` applies it at the
      trained scale alpha / rank. Only for a policy loaded from a pipeline.
    - ``diffusers``: :meth:`save_pretrained` after the LoRA is merged into the base
      weights (base dtype; the float32 adapter's product is rounded once), or the full
      fine-tune's weights.
    """

    EXPORT_FORMATS = ("diffusers-lora", "diffusers")

    def export_formats(self) -> tuple[str, ...]:
        return self.EXPORT_FORMATS if self.pipeline is not None else ("diffusers",)

    def export(self, fmt: str, out: Path) -> str:
        """Write ``fmt`` into ``out``; returns the Python that loads it."""
        if fmt == "diffusers-lora":
            return self._export_lora(out)
        merge_lora(self.transformer)
        self.save_pretrained(out)
        if self.pipeline is None:  # a toy: component folders, not a stock pipeline
            cls = type(self.transformer).__name__
            return (
                f"from diffusers import {cls}\n"
                f'transformer = {cls}.from_pretrained("{out}/transformer")\n'
                f"# or all of it: alignflow train ... policy.path={out}"
            )
        cls = type(self.pipeline).__name__
        return f'from diffusers import {cls}\npipe = {cls}.from_pretrained("{out}")'

    def _export_lora(self, out: Path) -> str:
        from peft.utils import get_peft_model_state_dict

        config = getattr(self.transformer, "peft_config", {}).get("default")
        if config is None:
            raise ConfigError(
                "export --format",
                "diffusers-lora",
                "a run trained with LoRA (train.finetune=lora); a full fine-tune exports "
                "with --format diffusers",
            )
        cls = type(self.pipeline)
        metadata = config.to_dict()
        metadata["target_modules"] = sorted(metadata["target_modules"])  # a set: not JSON
        cls.save_lora_weights(
            out,
            transformer_lora_layers=get_peft_model_state_dict(self.transformer),
            transformer_lora_adapter_metadata=metadata,
        )
        base = self.pipeline.name_or_path
        return (
            f"from diffusers import {cls.__name__}\n"
            f'pipe = {cls.__name__}.from_pretrained("{base}")\n'
            f'pipe.load_lora_weights("{out}")  # scale alpha / rank = '
            f"{config.lora_alpha / config.r:g}, as trained"
        )


def merge_lora(module: torch.nn.Module) -> None:
    """Fold every LoRA adapter that peft injected into ``module`` into its base layer
    and put the base layer back in its place: a plain module again, which
    ``save_pretrained`` writes with the diffusers key names."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in list(module.named_modules()):
        if isinstance(layer, BaseTunerLayer):
            layer.merge(safe_merge=True)  # refuses a non-finite result
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent), child, layer.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config
