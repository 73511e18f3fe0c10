"""Whole tensors from and into FSDP2's sharded ones.

FSDP2 (``fully_shard``, what accelerate's FSDP2 plugin applies) replaces each
parameter by a DTensor holding this process's shard. Checkpoints store whole tensors,
as one process writes them: reading a shard whole (:func:`whole`) is a collective every
process calls; writing puts each process's shard back (:func:`assign`). The optimizer
state goes through PyTorch's distributed-checkpoint helpers and is saved numbered as an
unsharded run saves it, so that a checkpoint resumes with or without FSDP2.
"""

from __future__ import annotations

from typing import Any

import torch


def is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def whole(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or the whole tensor of a DTensor (every process must call this)."""
    return t.full_tensor() if is_sharded(t) else t


@torch.no_grad()
def assign(dst: torch.Tensor, value: torch.Tensor) -> None:
    """``dst.copy_(value)`` for a whole ``value``, also when ``dst`` is a DTensor shard."""
    if is_sharded(dst):
        from torch.distributed.tensor import distribute_tensor

        value = distribute_tensor(value.to(dst.device, dst.dtype), dst.device_mesh, dst.placements)
    dst.copy_(value)


def optimizer_state(optimizer: Any, model: Any = None) -> dict[str, Any]:
    """The optimizer's state dict as an unsharded run saves it (parameters numbered in
    the optimizer's order), also for the FSDP2-sharded ``model``: there the shards are
    gathered whole onto the main process's CPU (a collective every process calls)."""
    if model is None:
        return optimizer.state_dict()
    return _numbered(_by_name(model, optimizer))


def load_optimizer_state(optimizer: Any, state: dict[str, Any], model: Any = None) -> None:
    """Put a saved state dict (numbered parameters, from a sharded run or not) back;
    ``model``: the FSDP2-sharded module, if any."""
    if model is None:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = [n for g in _by_name(model, optimizer)["param_groups"] for n in g["params"]]
    named = {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]
        ],
    }
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, _raw(optimizer), optim_state_dict=named, options=options)


def _by_name(model: Any, optimizer: Any) -> dict[str, Any]:
    """PyTorch's whole optimizer state of a sharded model, keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, _raw(optimizer), options=options)


def _numbered(named: dict[str, Any]) -> dict[str, Any]:
    """Numbered as ``optimizer.state_dict()`` numbers them, every tensor whole on the CPU
    (PyTorch leaves DTensors in the state when the mesh is on the CPU)."""
    names = [n for g in named["param_groups"] for n in g["params"]]
    index = {n: i for i, n in enumerate(names)}

    def plain(v: Any) -> Any:
        return whole(v).cpu() if isinstance(v, torch.Tensor) else v

    return {
        "state": {index[n]: {k: plain(v) for k, v in s.items()} for n, s in named["state"].items()},
        "param_groups": [
            {**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]
        ],
    }


def _raw(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
