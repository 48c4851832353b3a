"""The process groups that collective ops run in, looked up by name at run time.

A graph names its group (`fg.allreduce %x {group = "tp", world_size = 2 : i64}`); the IR
never holds a process group. Each rank registers its groups once, after
`torch.distributed.init_process_group`, and the torch implementations of the collective ops
find them here. `init_tensor_parallel` (called by `fusegraph.launch` and usable under
`torchrun`) does both and registers the whole world as group `"tp"`.

Example:
    >>> import torch.distributed as dist
    >>> dist.init_process_group("gloo", rank=rank, world_size=2, init_method=url)
    >>> register_group("tp", dist.group.WORLD)
    >>> get_group("tp", world_size=2, op="fg.allreduce")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

DEFAULT_GROUP = "tp"

_GROUPS: dict[str, ProcessGroup | None] = {}  # None: torch.distributed's default group
_CURRENT: dict[str, RankInfo] = {}


class CollectiveError(RuntimeError):
    """A collective op cannot run: no group by that name, or a group of another size."""


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in its tensor-parallel group.

    Attributes:
        rank: This process's rank in the group (0-based).
        world_size: How many ranks share the model.
        device: The torch device string this rank computes on (`cpu` or `cuda:<local rank>`).
        backend: The torch.distributed backend (`gloo` or `nccl`).
    """

    rank: int
    world_size: int
    device: str
    backend: str


def current_rank() -> RankInfo | None:
    """This process's place in the tensor-parallel group, set by `init_tensor_parallel`
    (None outside a tensor-parallel run)."""
    return _CURRENT.get(DEFAULT_GROUP)


def leave_tensor_parallel() -> None:
    """Forget the group `"tp"` and this process's rank (not the torch.distributed group)."""
    _CURRENT.pop(DEFAULT_GROUP, None)
    unregister_group(DEFAULT_GROUP)


def register_group(name: str, group: ProcessGroup | None) -> None:
    """Make `group` (a torch.distributed ProcessGroup; None: the default one) the one graphs call `name`.

    Example:
        >>> register_group("tp", dist.group.WORLD)
    """
    if not name:
        raise ValueError("register_group: name must be a non-empty string")
    _GROUPS[name] = group


def unregister_group(name: str) -> None:
    """Forget group `name` (no error if it was never registered)."""
    _GROUPS.pop(name, None)


def get_group(name: str, *, world_size: int, op: str) -> ProcessGroup | None:
    """The process group registered as `name`, checked to have `world_size` ranks.

    Raises:
        CollectiveError: No group `name` on this rank, torch.distributed is not initialized,
            or the group's size differs from the graph's `world_size`; the message names
            the op.
    """
    if name not in _GROUPS:
        known = sorted(_GROUPS) or "none"
        raise CollectiveError(
            f"{op}: no process group named {name!r} on this rank (registered: {known}); "
            f"call fusegraph.distributed.init_tensor_parallel() or register_group({name!r}, group) first"
        )
    if not dist.is_initialized():
        raise CollectiveError(f"{op}: torch.distributed is not initialized on this rank")
    group = _GROUPS[name]
    if (size := dist.get_world_size(group)) != world_size:
        raise CollectiveError(
            f"{op}: the graph was built for world_size {world_size}, but process group {name!r} has {size} ranks"
        )
    return group


def init_tensor_parallel(
    backend: str | None = None, *, rank: int | None = None, world_size: int | None = None
) -> RankInfo:
    """Join the process group (torchrun's environment or explicit arguments) and register
    the whole world as group `"tp"`.

    Under `torchrun` call it with no arguments: it reads `RANK`, `WORLD_SIZE`,
    `MASTER_ADDR`/`MASTER_PORT` (`init_method="env://"`). The backend defaults to `nccl`
    when CUDA is available and `gloo` otherwise. An already initialized default group is
    reused.

    Example:
        >>> info = init_tensor_parallel()          # torchrun --nproc-per-node 2 app.py
        >>> info.rank, info.world_size, info.device
        (0, 2, 'cuda:0')
    """
    import torch

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"init_tensor_parallel: backend must be 'gloo' or 'nccl', got {backend!r}")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend}
        if rank is not None and world_size is not None:
            kwargs.update(rank=rank, world_size=world_size)
        dist.init_process_group(**kwargs)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    register_group(DEFAULT_GROUP, dist.group.WORLD)
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    info = RankInfo(rank=rank, world_size=world_size, device=device, backend=dist.get_backend())
    _CURRENT[DEFAULT_GROUP] = info
    return info
