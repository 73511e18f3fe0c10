"""Batch operations on nested containers of tensors.

Conditions, rollouts and training items are dataclasses (or dicts) whose tensor
leaves have the batch in their first dimension. These helpers apply one batch
operation to every tensor leaf, so that an adapter's opaque ``Condition`` can be
indexed by the trainer without the trainer knowing its fields. Non-tensor leaves
(strings, numbers, None) are shared by the whole batch and pass through unchanged,
and so do dataclass fields declared with ``field(metadata=SHARED)`` (e.g. a
schedule that every sample of the batch uses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")

SHARED = {"shared": True}
"""Field metadata of a dataclass tensor that is not batched."""

PADDED = {"padded": True}
"""Field metadata of a dataclass tensor [B, T, ...] of token sequences (with a mask
field, also PADDED) whose length T is that of its batch's longest prompt:
:func:`concat` zero-pads the batches to the longest T before joining them."""


def _batched_fields(obj: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(obj) if f.init and not f.metadata.get("shared")]


def map_tensors(obj: T, fn: Callable[[torch.Tensor], torch.Tensor]) -> T:
    """``obj`` with ``fn`` applied to every tensor leaf (dataclasses, dicts, tuples)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in _batched_fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, Mapping):
        return type(obj)({k: map_tensors(v, fn) for k, v in obj.items()})
    if isinstance(obj, tuple):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def select(obj: T, index: torch.Tensor | slice | Sequence[int]) -> T:
    """The samples ``index`` of every tensor leaf."""
    if not isinstance(index, slice):
        index = torch.as_tensor(index, dtype=torch.long)
    return map_tensors(
        obj, lambda t: t[index.to(t.device) if isinstance(index, torch.Tensor) else index]
    )


def repeat_interleave(obj: T, repeats: int) -> T:
    """Each sample repeated ``repeats`` times in place: [a, b] -> [a, a, b, b]."""
    return map_tensors(obj, lambda t: t.repeat_interleave(repeats, dim=0))


def to_device(obj: T, device: torch.device | str) -> T:
    return map_tensors(obj, lambda t: t.to(device))


def pad_to_longest(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """[B_i, T_i, ...] tensors zero-padded along dim 1 to the longest T."""
    longest = max(t.shape[1] for t in tensors)
    return [
        torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, longest - t.shape[1]))
        for t in tensors
    ]


def concat(objs: Sequence[T]) -> T:
    """Concatenate same-structured containers along the batch dimension."""
    first = objs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(objs), dim=0)  # type: ignore[return-value]
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        changes = {}
        for f in _batched_fields(first):
            values = [getattr(o, f.name) for o in objs]
            if f.metadata.get("padded") and values[0] is not None:
                values = pad_to_longest(values)
            changes[f.name] = concat(values) if _batched(values[0]) else values[0]
        return dataclasses.replace(first, **changes)
    if isinstance(first, Mapping):
        return type(first)(
            {k: concat([o[k] for o in objs]) if _batched(v) else v for k, v in first.items()}
        )
    if isinstance(first, tuple):
        return type(first)(concat([o[i] for o in objs]) for i in range(len(first)))
    return first


def _batched(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, Mapping, tuple)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def chunks(seq: Sequence[T], size: int) -> list[Sequence[T]]:
    """``seq`` cut into consecutive pieces of ``size`` (the last may be shorter)."""
    return [seq[i : i + size] for i in range(0, len(seq), max(1, size))]


def batch_size(obj: Any) -> int:
    """The first dimension of the first tensor leaf (0 if there is none)."""
    sizes: list[int] = []
    map_tensors(obj, lambda t: sizes.append(t.shape[0]) or t)
    return sizes[0] if sizes else 0
