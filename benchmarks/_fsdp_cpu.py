"""FSDP2 through accelerate in one CPU process, for the CPU checks of the FSDP2 code
path (``realscale.py --smoke``, tests/sdk/test_distributed.py).

accelerate runs FSDP on GPUs only: launched with configs/accelerate/fsdp2.yaml on a
CPU it trains unsharded. PyTorch's ``fully_shard`` itself runs on the CPU over gloo, so
this opens accelerate's gate: a one-process gloo group, then the accelerator's state
switched to FSDP with the launch file's plugin settings. What follows is accelerate's
own FSDP2 preparation (``fully_shard`` of each transformer block and the root, the
optimizer mapped onto the sharded parameters) and alignflow's trainer as it runs on a
GPU.
"""

from __future__ import annotations

import os
from typing import Any


def fsdp2_accelerator(cfg: Any, port: int = 29517) -> Any:
    """The trainer's accelerator for ``cfg``, switched to FSDP2 on one CPU process."""
    import torch.distributed as dist
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from alignflow.sdk.build import build_accelerator

    if not dist.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
        dist.init_process_group("gloo")
    acc = build_accelerator(cfg)
    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=True,
        state_dict_type="FULL_STATE_DICT",
    )
    # both of accelerate's shared states: some calls rebuild the one from the other
    acc.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    return acc
