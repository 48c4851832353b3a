"""Refuse a cache overflow before a compiled graph writes anything, on every device.

The ops' own checks run inside their CPU implementations; on CUDA the Triton kernels (and a
replayed CUDA graph) run no Python per op, so the runtime checks once per call instead: for
each distinct (kv_blocks, row offsets, cache lengths, lookup table) of the graph's buffer
writes, every new position must fall in a page of its sequence's lookup row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from xdsl.ir import BlockArgument, SSAValue

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.registry import evaluate_dim
from fusegraph.ops._ragged import check_capacity

# op name -> (operand index of the rows tensor, of kv_blocks, of row offsets, lengths, lookup)
_WRITES = {
    "fg.kv_cache.store": (1, 0, 2, 3, 4),
    "fg.rope_split_store": (0, 3, 1, 4, 5),
}


@dataclass(frozen=True)
class WriteGuard:
    """One buffer write to check: graph-input indices of its operands, and its row count."""

    op: str
    rows: Dim
    kv_blocks: int
    row_offsets: int
    cache_lengths: int
    lookup_table: int

    def check(self, inputs: tuple[torch.Tensor, ...], dims: dict[str, int]) -> None:
        """Raise ValueError (naming the sequence) if this write would overflow."""
        check_capacity(
            self.op, inputs[self.kv_blocks], evaluate_dim(self.rows, dims),
            inputs[self.row_offsets], inputs[self.cache_lengths], inputs[self.lookup_table],
        )  # fmt: skip


def write_guards(graph: Graph) -> list[WriteGuard]:
    """The distinct checks the graph's buffer writes need, where the metadata are graph inputs."""
    guards: dict[WriteGuard, None] = {}
    for op in graph.block.ops:
        if (slots := _WRITES.get(op.name)) is None:
            continue
        rows_i, kv_i, *meta_i = slots
        kv_root = _buffer_root(op.operands[kv_i])
        meta = [op.operands[i] for i in meta_i]
        if kv_root is None or not all(isinstance(v, BlockArgument) for v in meta):
            continue  # computed metadata: only the op's own check (CPU) applies
        rows = op.operands[rows_i].type.shape[0]  # type: ignore[attr-defined]
        indices = [v.index for v in meta]  # type: ignore[attr-defined]
        guards[WriteGuard(op.name, rows, kv_root.index, *indices)] = None
    return list(guards)


def _buffer_root(value: SSAValue) -> BlockArgument | None:
    """The graph input a buffer version descends from (through earlier writes), if any."""
    while not isinstance(value, BlockArgument):
        owner = value.owner
        slots = _WRITES.get(getattr(owner, "name", ""))
        if slots is None:
            return None
        value = owner.operands[slots[1]]  # type: ignore[union-attr]
    return value
