"""Tensor parallelism on torch.distributed: process groups, launching, sharded weights.

- `groups.py`: the process groups collective ops run in (`register_group`, `get_group`,
  `init_tensor_parallel`).
- `launch.py`: `launch(fn, world_size, *args)` (torch.multiprocessing) and `run_rank` (torchrun).
- `shards.py`: each rank's slice of a checkpoint (dense and GPTQ; safetensors `get_slice`).
"""

from fusegraph.distributed.groups import (
    DEFAULT_GROUP,
    CollectiveError,
    RankInfo,
    get_group,
    init_tensor_parallel,
    register_group,
    unregister_group,
)
from fusegraph.distributed.launch import LaunchError, launch, run_rank

__all__ = [
    "DEFAULT_GROUP",
    "CollectiveError",
    "LaunchError",
    "RankInfo",
    "get_group",
    "init_tensor_parallel",
    "launch",
    "register_group",
    "run_rank",
    "unregister_group",
]
