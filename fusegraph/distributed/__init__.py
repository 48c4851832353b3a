"""Tensor parallelism on torch.distributed: process groups, launching, sharded models.

- `groups.py`: the process groups collective ops run in (`register_group`, `get_group`,
  `init_tensor_parallel`, `current_rank`).
- `launch.py`: `launch(fn, world_size, *args)` (torch.multiprocessing) and `run_rank` (torchrun).
- `shards.py`: each rank's slice of a checkpoint (dense and GPTQ; safetensors `get_slice`).
- `model.py`: `load_model_shard` / `build_model_shard`, a rank's `DecoderModel`.
- `cli.py`: `--tp N` of `fusegraph model` and `fusegraph generate`.

Example:
    >>> from fusegraph.distributed import launch, load_model_shard
    >>> def rank_main(info):
    ...     model = load_model_shard("llama-gptq/", rank=info.rank, world_size=info.world_size)
    ...     return model.compile(64)(...)
    >>> launch(rank_main, 2)
"""

from typing import Any

from fusegraph.distributed.groups import (
    DEFAULT_GROUP,
    CollectiveError,
    RankInfo,
    current_rank,
    get_group,
    init_tensor_parallel,
    register_group,
    unregister_group,
)
from fusegraph.distributed.launch import LaunchError, launch, run_rank

_LAZY = {  # these import the layers (fusegraph.nn): loaded on first use
    "build_model_shard": "fusegraph.distributed.model",
    "load_model_shard": "fusegraph.distributed.model",
    "ShardingStrategy": "fusegraph.nn.sharding",
}


def __getattr__(name: str) -> Any:
    if (module := _LAZY.get(name)) is not None:
        import importlib

        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'fusegraph.distributed' has no attribute {name!r}")


__all__ = [
    "DEFAULT_GROUP",
    "CollectiveError",
    "LaunchError",
    "RankInfo",
    "ShardingStrategy",
    "build_model_shard",
    "current_rank",
    "get_group",
    "init_tensor_parallel",
    "launch",
    "load_model_shard",
    "register_group",
    "run_rank",
    "unregister_group",
]
