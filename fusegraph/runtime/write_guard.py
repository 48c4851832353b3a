"""Refuse a cache overflow before a compiled graph writes anything, without a host sync on CUDA.

On the CPU the shared host checks (`input_checks.py`) refuse bad metadata before the module
runs; reading CPU tensors costs nothing. On CUDA a host check would copy the metadata to the
host and stall the GPU on every call, so the runtime checks on the device instead:

1. first in every step (inside the CUDA graph when one is captured), one launch per distinct
   (kv_blocks, row offsets, cache lengths, lookup table) of the graph's buffer writes checks
   every sequence's new positions against its lookup row (`kernels/write_flag.py`) and sets
   that cache's device flag on an overflow; the flag stays set until reported;
2. every cache-writing kernel reads the flag and writes nothing while it is set;
3. after the step the flag is copied to pinned host memory without blocking; the next call
   reads that copy (no sync) and raises the same `ValueError` as the host check, naming the
   op, the sequence, its last position and its capacity. `CompiledGraph.synchronize()`
   waits for the queued steps and raises at once.

So nothing is written by the overflowing step, nor by any step queued after it before the
refusal is raised; the flag is cleared when it is raised, and the model can run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from xdsl.ir import BlockArgument

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.registry import evaluate_dim
from fusegraph.runtime.input_checks import WRITE_OPERANDS, buffer_root


@dataclass(frozen=True)
class WriteGuard:
    """One buffer write to check: graph-input indices of its operands, and its row count."""

    op: str
    rows: Dim
    kv_blocks: int
    row_offsets: int
    cache_lengths: int
    lookup_table: int


def write_guards(graph: Graph) -> list[WriteGuard]:
    """The distinct checks the graph's buffer writes need, where the metadata are graph inputs."""
    guards: dict[WriteGuard, None] = {}
    for op in graph.block.ops:
        if (slots := WRITE_OPERANDS.get(op.name)) is None:
            continue
        rows_i, kv_i, *meta_i = slots
        kv_root = buffer_root(op.operands[kv_i])
        meta = [op.operands[i] for i in meta_i]
        if kv_root is None or not all(isinstance(v, BlockArgument) for v in meta):
            continue  # computed metadata: only the op's own check (CPU) applies
        rows = op.operands[rows_i].type.shape[0]  # type: ignore[attr-defined]
        indices = [v.index for v in meta]  # type: ignore[attr-defined]
        guards[WriteGuard(op.name, rows, kv_root.index, *indices)] = None
    return list(guards)


class DeviceWriteGuards:
    """The CUDA refusal: device checks in the step, reported at the next call (see above).

    Example:
        >>> guards = DeviceWriteGuards(write_guards(graph))
        >>> guards.raise_if_refused(inputs)     # a refusal of an earlier step, read without sync
        >>> guards.launch(inputs, dims)         # first in the step (captured with it)
        >>> outputs = module(*inputs)
        >>> guards.publish(inputs)              # flag -> pinned host memory, non-blocking
    """

    def __init__(self, guards: Sequence[WriteGuard]) -> None:
        from fusegraph.runtime.kernels.write_flag import op_id

        self.guards = list(guards)
        self.op_ids = [op_id(g.op) for g in self.guards]
        self.caches = sorted({g.kv_blocks for g in self.guards})
        self.recent: dict[int, torch.Tensor] = {}  # graph-input index -> the latest step's cache

    def launch(self, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> None:
        """Launch the capacity check of every guard (one kernel each, no host sync)."""
        from fusegraph.runtime.kernels.write_flag import cache_flag, check_capacity_on_device

        for guard, ident in zip(self.guards, self.op_ids):
            kv = inputs[guard.kv_blocks]
            check_capacity_on_device(
                cache_flag(kv).device_words, inputs[guard.row_offsets], inputs[guard.cache_lengths],
                inputs[guard.lookup_table], int(evaluate_dim(guard.rows, dims)), kv.shape[0], kv.shape[3],
                ident,
            )  # fmt: skip

    def publish(self, inputs: Sequence[torch.Tensor]) -> None:
        """Copy each cache's flag to its pinned host mirror, queued after the step."""
        from fusegraph.runtime.kernels.write_flag import cache_flag

        for i in self.caches:
            flag = cache_flag(inputs[i])
            flag.host_words.copy_(flag.device_words, non_blocking=True)
            self.recent[i] = inputs[i]

    def raise_if_refused(self, inputs: Sequence[torch.Tensor] | None = None, wait: bool = False) -> None:
        """Raise the refusal an earlier step recorded on these inputs' caches (None: the caches
        of the latest step). Reads the pinned copies (no sync) unless `wait`, which first waits
        for the steps queued on the caches' devices."""
        from fusegraph.runtime.kernels.write_flag import cache_flag

        caches = [inputs[i] for i in self.caches] if inputs is not None else list(self.recent.values())
        for kv in caches:
            flag = cache_flag(kv)
            if wait:
                torch.cuda.synchronize(kv.device)
            if int(flag.host_view[0]) == 0:
                continue
            torch.cuda.synchronize(kv.device)  # the error path: let queued steps finish
            words = flag.device_words.tolist()
            flag.clear()
            raise ValueError(refusal_message(words))


def refusal_message(words: Sequence[int]) -> str:
    """The `ValueError` text for the device flag's words, as the host checks word it."""
    from fusegraph.runtime.kernels.write_flag import op_name

    code, seq, a, b, c, num_blocks, page_size, ident = (int(w) for w in words)
    op = op_name(ident)
    after = "; refused on the device: that step, and any queued after it, wrote nothing to the cache"
    if code == 2:
        falls = f", entry {seq + 1} falls below entry {seq}" if seq >= 0 else ""
        return (
            f"{op}: input_row_offsets must rise from 0 to the {c} rows of the input "
            f"(first entry {a}, last entry {b}{falls}){after}"
        )
    bad = f"; entry {b} is {c}, past num_blocks {num_blocks}" if c >= 0 else ""
    return (
        f"{op}: sequence {seq} would reach position {a}, past its capacity of {b * page_size} tokens "
        f"({b} pages of {page_size} in lookup_table row {seq}{bad}){after}"
    )
