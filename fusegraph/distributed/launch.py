"""`launch`: run a function on every rank of a tensor-parallel group, one process each.

`launch(fn, world_size, *args)` starts `world_size` processes with
`torch.multiprocessing` (spawn), sets torchrun's environment in each (`RANK`,
`LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), joins the process group
(`init_tensor_parallel`: gloo on CPUs, NCCL on GPUs) and calls `fn(info, *args)` with the
rank's `RankInfo`. It returns each rank's return value, in rank order. A function written
this way runs unchanged under `torchrun --nproc-per-node N` through `run_rank(fn, *args)`.

Example:
    >>> def work(info: RankInfo, x: int) -> int:
    ...     return info.rank * x
    >>> launch(work, 2, 10, backend="gloo")
    [0, 10]
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch.distributed as dist
import torch.multiprocessing as mp

from fusegraph.distributed.groups import init_tensor_parallel, leave_tensor_parallel

if TYPE_CHECKING:
    from fusegraph.compiler.devices import DeviceRef

_R = TypeVar("_R")  # what the rank function returns


class LaunchError(RuntimeError):
    """A rank failed; the message carries that rank's traceback.

    Attributes:
        rank: The failed rank (None when none reported).
        error: The exception the rank raised, when it could be pickled back (else None).
    """

    def __init__(self, message: str, rank: int | None = None, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.rank, self.error = rank, error


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_rank(fn: Callable[..., _R], *args: Any, backend: str | None = None) -> _R:
    """Join the group from torchrun's environment, run `fn(info, *args)`, leave the group.

    Example:
        >>> # torchrun --nproc-per-node 2 my_app.py   (my_app.py calls run_rank(main))
        >>> run_rank(main)
    """
    info = init_tensor_parallel(backend)
    try:
        return fn(info, *args)
    finally:
        leave_tensor_parallel()
        if dist.is_initialized():
            dist.destroy_process_group()


def _entry(
    rank: int,
    world_size: int,
    port: int,
    backend: str | None,
    devices: Sequence[str] | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
    threads: int | None,
) -> None:
    if threads is not None:  # a forked child must not reuse the parent's OpenMP pool (it hangs)
        import torch

        torch.set_num_threads(threads)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank if not devices else _local_index(devices[rank], rank)),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    # Plain pickle bytes: torch's queue pickler would share tensor storage through file
    # descriptors that die with this process.
    try:
        results.put(pickle.dumps((rank, True, run_rank(fn, *args, backend=backend))))
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which raises it
        try:
            payload = pickle.dumps((rank, False, (traceback.format_exc(), err)))
            pickle.loads(payload)
        except Exception:  # noqa: BLE001 - an exception that does not round-trip: text only
            payload = pickle.dumps((rank, False, (traceback.format_exc(), None)))
        results.put(payload)


def _local_index(device: str, rank: int) -> int:
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else rank


def launch(
    fn: Callable[..., _R],
    world_size: int,
    *args: Any,
    backend: str | None = None,
    devices: Sequence[str | DeviceRef] | None = None,
    timeout_s: float = 300.0,
    start_method: str = "spawn",
) -> list[_R]:
    """Run `fn(info, *args)` on `world_size` ranks (one spawned process each).

    Args:
        fn: A module-level (picklable) function taking the rank's `RankInfo` first.
        world_size: How many processes.
        *args: Passed to every rank (picklable).
        backend: "gloo" or "nccl" (default: nccl with CUDA, else gloo).
        devices: One device per rank (`"cuda:0"`, `DeviceRef.GPU(1)`, ...); its length must
            equal `world_size`.
        timeout_s: Give up waiting for the ranks after this long.
        start_method: "spawn" (default; needed with CUDA) or "fork" (CPU only: the ranks
            inherit the imported modules, which starts them in well under a second; each
            forked rank runs torch with one thread, since the parent's OpenMP pool does
            not survive a fork).

    Returns:
        Each rank's return value (picklable), in rank order.

    Raises:
        WorldSizeMismatchError: `devices` does not have `world_size` entries.
        LaunchError: A rank raised; the message holds its traceback.
    """
    from fusegraph.nn.sharding import ShardingStrategy

    strategy = ShardingStrategy.tensor_parallel(world_size, devices)  # checks len(devices)
    if start_method not in ("spawn", "fork"):
        raise ValueError(f"launch: start_method must be 'spawn' or 'fork', got {start_method!r}")
    ctx: Any = mp.get_context(start_method)
    threads = 1 if start_method == "fork" else None
    results = ctx.SimpleQueue()
    port = _free_port()
    procs = [
        ctx.Process(
            target=_entry,
            args=(r, world_size, port, backend, strategy.devices or None, fn, args, results, threads),
            daemon=False,
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    out: dict[int, _R] = {}
    failure: LaunchError | None = None
    try:
        for _ in range(world_size):
            rank, ok, value = _get(results, procs, timeout_s)
            if not ok:
                failure = LaunchError(f"rank {rank} failed:\n{value[0]}", rank, value[1])
                break
            out[rank] = value
    finally:
        for p in procs:
            p.join(timeout=5 if failure is None else 0.5)
            if p.is_alive():
                p.kill()
                p.join()
    if failure is not None:
        raise failure
    return [out[r] for r in range(world_size)]


def _get(results: Any, procs: list[Any], timeout_s: float) -> tuple[int, bool, Any]:
    """The next result; a LaunchError when a rank died without sending one, or on timeout."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        if not results.empty():
            result: tuple[int, bool, Any] = pickle.loads(results.get())  # what _entry put
            return result
        dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
        if dead:
            raise LaunchError(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode} before reporting")
        if time.monotonic() > deadline:
            raise LaunchError(f"launch: no result after {timeout_s:.0f} s")
        time.sleep(0.01)
