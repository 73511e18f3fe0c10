"""What the adapters share: dtypes, attention backends, loading, export and merging LoRA."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
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


def component_config(source: Any, name: str) -> dict[str, Any]:
    """The config of a pipeline's component ``name`` (``transformer``, ``vae``...): read
    from ``name/config.json`` of a folder or hub id (no weights loaded), or taken from a
    pipeline already built in this process."""
    if isinstance(source, str):
        return read_json(source, f"{name}/config.json", "policy.path")
    return dict(getattr(source, name).config)


class PromptCache:
    """Every prompt a run uses, encoded once; then the text encoders can go.

    ``encode(prompts) -> tensors`` is the adapter's own prompt encoder (each tensor one
    row per prompt). :meth:`fill` runs it over the unique prompts in batches and keeps
    each prompt's rows on the CPU; afterwards a call returns the cached rows, stacked on
    ``device``, and ``encode`` is never called again. Memory: the rows of every prompt
    (SD3: 333 x 4096 tokens, 2.7 MB in bf16 per prompt; Wan: 512 x 4096, 4.2 MB)."""

    def __init__(self, encode: Callable[[list[str]], Any], device: torch.device):
        self.encode, self.device = encode, device
        self.rows: dict[str, tuple[torch.Tensor, ...]] = {}

    def fill(self, prompts: Sequence[str], batch_size: int = 8) -> None:
        todo = list(dict.fromkeys(p for p in prompts if p not in self.rows))
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            out = self.encode(chunk)
            out = out if isinstance(out, tuple) else (out,)
            for j, prompt in enumerate(chunk):
                self.rows[prompt] = tuple(t[j].cpu() for t in out)
        size = sum(t.nbytes for row in self.rows.values() for t in row)
        log.info("encoded %d prompts once: %.2f GB kept on the CPU", len(self.rows), size / 1e9)

    def __call__(self, prompts: Sequence[str]) -> Any:
        missing = [p for p in prompts if p not in self.rows]
        if missing:
            raise ConfigError(
                "policy.encode_prompts_once",
                True,
                "false to encode prompts that are not in the run's data.train / data.eval",
                hint=f"{missing[0]!r} was not encoded at the start and the text encoders are freed",
            )
        out = tuple(
            torch.stack([self.rows[p][k] for p in prompts]).to(self.device)
            for k in range(len(self.rows[prompts[0]]))
        )
        return out if len(out) > 1 else out[0]


def free_text_encoders(pipe: Any, names: Sequence[str], modules: dict[str, Any]) -> None:
    """Drop a pipeline's text encoders (and the policy's references to them) and give
    their memory back: the prompts they were needed for are encoded."""
    import gc

    for name in names:
        modules.pop(name, None)
        if getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def vae_scale(source: Any) -> int:
    """Pixels per latent cell of a diffusers pipeline's VAE, as the pipelines compute it:
    ``AutoencoderKL``, 2 ** (number of blocks - 1); the Qwen-Image video VAE, 2 ** (its
    number of downsamplings)."""
    vae = component_config(source, "vae")
    if "temperal_downsample" in vae:  # diffusers' spelling
        return 2 ** len(vae["temperal_downsample"])
    return 2 ** (len(vae["block_out_channels"]) - 1)


def check_multiple(field: str, value: int, multiple: int, why: str) -> None:
    if value < multiple or value % multiple:
        raise ConfigError(field, value, f"a positive multiple of {multiple} ({why})")


def pipeline_source(path: Any, cls: Any, field: str = "policy.path") -> Any:
    """What a loader's ``path`` names: a local folder in diffusers layout or a hub id
    (checked, a one-line config error before the hub is tried), or a ``cls`` pipeline
    already built in this process (random weights at real size, a pipeline the caller
    quantised), used as it is."""
    if isinstance(path, (str, Path)):
        what = f"a folder holding a {cls.__name__} in diffusers layout"
        return pretrained_source(str(path), field, "model_index.json", what)
    if not isinstance(path, cls):
        raise ConfigError(field, type(path).__name__, f"a folder, a hub id or a {cls.__name__}")
    return path


def load_pipeline(cls: Any, source: Any, dtype: torch.dtype, **kwargs: Any) -> Any:
    """``cls.from_pretrained(source)`` for a folder or hub id checked by
    :func:`pipeline_source`; a pipeline object gets ``kwargs`` as its components and its
    other modules are cast to ``dtype``."""
    import warnings

    if not isinstance(source, str):
        for name, component in source.components.items():
            if name in kwargs:
                setattr(source, name, kwargs[name])
            elif isinstance(component, torch.nn.Module):
                cast(component, dtype)
        return source
    with warnings.catch_warnings():
        # diffusers >= 0.39 renamed torch_dtype to dtype; older ones only know torch_dtype.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return cls.from_pretrained(source, torch_dtype=dtype, **kwargs)


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module.to(dtype)`` as ``from_pretrained(torch_dtype=dtype)`` loads it: the
    tensors the class keeps in float32 stay float32. diffusers keeps its
    ``_keep_in_fp32_modules`` (Wan's RoPE, time embedder and norms) at any dtype;
    transformers keeps ``_keep_in_fp32_modules`` (T5's ``wo``) under float16 only and
    ``_keep_in_fp32_modules_strict`` under float16 and bfloat16."""
    module.to(dtype)
    strict = getattr(module, "_keep_in_fp32_modules_strict", None)  # a transformers model
    keep = list(strict or [])
    if strict is None or dtype == torch.float16:
        keep += list(getattr(module, "_keep_in_fp32_modules", None) or [])
    if keep and dtype != torch.float32:
        tensors = (*module.named_parameters(), *module.named_buffers())
        for name, t in tensors:
            if t.is_floating_point() and any(k in name.split(".") for k in keep):
                t.data = t.data.float()
    return module


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
