"""Tensor parallelism on torch.distributed: process groups, launching, sharded weights.

- `groups.py`: the process groups collective ops run in (`register_group`, `get_group`,
  `init_tensor_parallel`).
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

__all__ = [
    "DEFAULT_GROUP",
    "CollectiveError",
    "RankInfo",
    "get_group",
    "init_tensor_parallel",
    "register_group",
    "unregister_group",
]
