"""What RL trains and what the frozen reference is, once for every adapter.

- :class:`LoRA`: peft LoRA layers injected into the policy's trainable modules; the
  reference is the same modules with the adapters disabled (no second copy).
- :class:`Full`: every parameter of the trainable modules; the reference, when a
  loss needs one, is a frozen copy swapped in for the duration of the context.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn

from alignflow.sdk.errors import CheckpointError, ConfigError
from alignflow.sdk.policy import FlowPolicy
from alignflow.sdk.sharded import assign, whole


class Finetune(Protocol):
    def parameters(self) -> list[nn.Parameter]: ...

    has_reference: bool  # whether reference() is available

    def reference(self): ...  # a context manager in which the policy is the reference

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


def _trained_state(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": whole(p.detach()).clone()
        for name, m in modules.items()
        for key, p in m.named_parameters()
        if p.requires_grad
    }


def _load_trained_state(modules: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> None:
    expected = _trained_state(modules)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"trained weights do not fit this policy: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} "
            "(was the checkpoint written with another finetune mode, LoRA rank or model?)"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"trained weight {key}: shape {tuple(value.shape)} in the checkpoint, "
                f"{tuple(expected[key].shape)} in the policy"
            )
    for name, m in modules.items():
        for key, p in m.named_parameters():
            if p.requires_grad:
                assign(p, state[f"{name}.{key}"])


class LoRA:
    """LoRA (Hu et al., arXiv 2106.09685) through peft on ``targets`` of every trainable
    module. B is initialised to zero, so the policy starts equal to the reference."""

    def __init__(
        self,
        policy: FlowPolicy,
        rank: int,
        alpha: float,
        targets: Sequence[str] = (),
        dropout: float = 0.0,
    ):
        from peft import LoraConfig, inject_adapter_in_model

        self.modules = policy.trainable_modules()
        targets = list(targets) or list(policy.default_lora_targets)
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout)
        for name, module in self.modules.items():
            module.requires_grad_(False)
            try:
                inject_adapter_in_model(config, module)
            except ValueError as e:  # peft: "Target modules ... not found in the base model"
                raise ConfigError(
                    "train.lora_targets", targets, f"layer names that exist in {name}", hint=str(e)
                ) from e
            for key, p in module.named_parameters():
                p.requires_grad_("lora_" in key)
                if "lora_" in key:
                    # Adapters train in float32 even on a bf16/fp16 model (peft casts the
                    # input to the adapter's dtype and the output back).
                    p.data = p.data.float()

    has_reference = True  # the adapters off

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]

    @contextmanager
    def reference(self) -> Iterator[None]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [
            m
            for mod in self.modules.values()
            for m in mod.modules()
            if isinstance(m, BaseTunerLayer)
        ]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _trained_state(self.modules)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _load_trained_state(self.modules, state)


class Full:
    """Full fine-tuning of the trainable modules. With ``keep_reference`` a frozen copy
    is kept and swapped onto the policy inside :meth:`reference`. The weights train in
    the dtype they were loaded in: load float32 (``policy.dtype=float32``) and use
    ``train.mixed_precision=bf16`` for bf16 compute with float32 master weights."""

    def __init__(self, policy: FlowPolicy, keep_reference: bool):
        self.policy = policy
        self.modules = policy.trainable_modules()
        for m in self.modules.values():
            m.requires_grad_(True)
        self.frozen = (
            {n: copy.deepcopy(m).requires_grad_(False).eval() for n, m in self.modules.items()}
            if keep_reference
            else {}
        )

    @property
    def has_reference(self) -> bool:
        return bool(self.frozen)

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters()]

    @contextmanager
    def reference(self) -> Iterator[None]:
        if not self.frozen:
            raise RuntimeError(
                "Full fine-tuning was built without a reference copy (keep_reference=False)"
            )
        current = {n: getattr(self.policy, n) for n in self.frozen}
        for n, m in self.frozen.items():
            setattr(self.policy, n, m)
        try:
            yield
        finally:
            for n, m in current.items():
                setattr(self.policy, n, m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _trained_state(self.modules)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _load_trained_state(self.modules, state)


def build_finetune(
    policy: FlowPolicy,
    mode: str,
    *,
    rank: int,
    alpha: float,
    targets: Sequence[str],
    needs_reference: bool,
) -> Finetune:
    if mode == "lora":
        return LoRA(policy, rank, alpha, targets)
    if mode == "full":
        return Full(policy, keep_reference=needs_reference)
    raise ConfigError("train.finetune", mode, "'lora' or 'full'")
