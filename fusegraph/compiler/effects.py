"""What an op does besides computing its results: declared on the op class, read by passes
and by the runtime's input checks.

- `WritesBuffer`: an xDSL memory-effect trait. The op writes its `!fg.buffer` operand in
  place at run time (the IR stays functional: it also returns the next version), so xDSL's
  stock `dce` keeps it when nobody reads that version, and stock `cse` never merges two.
- `RaggedOperands`: an op trait saying which operands of a ragged-batch op are its token rows, its metadata,
  its paged cache and its rope table, by operand name. The runtime's metadata checks
  (`runtime/input_checks.py`, `runtime/write_guard.py`) read it instead of keeping a table
  of operand indices per op name.

Example:
    >>> class KVCacheStoreOp(FgOp):
    ...     traits = traits_def(
    ...         WritesBuffer(),
    ...         RaggedOperands(rows="x", row_offsets="input_row_offsets", lengths="cache_lengths",
    ...                        lookup_table="lookup_table", kv_blocks="kv_blocks"),
    ...     )
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue
from xdsl.traits import EffectInstance, MemoryEffect, MemoryEffectKind, OpTrait

from fusegraph.compiler.types import BufferType


class WritesBuffer(MemoryEffect):
    """The op reads and writes each of its `!fg.buffer` operands."""

    @classmethod
    def get_effects(cls, op: Operation) -> AbstractSet[EffectInstance]:
        buffers = [v for v in op.operands if isinstance(v.type, BufferType)]
        return {
            EffectInstance(kind, v)
            for v in buffers
            for kind in (MemoryEffectKind.READ, MemoryEffectKind.WRITE)
        }


def writes_buffer(op: Operation) -> bool:
    """Whether `op` declares an in-place buffer write."""
    return op.has_trait(WritesBuffer)


@dataclass(frozen=True)
class RaggedOperands(OpTrait):
    """The operand names of a ragged-batch op's token rows, metadata, cache and rope table.

    Attributes:
        rows: the `[T, ...]` operand whose dim 0 is the batch's token count.
        row_offsets: `input_row_offsets` (uint32 `[B+1]`).
        lengths: tokens cached per sequence before the step (`cache_lengths`, or `start_pos`).
        lookup_table: the page table of a paged op, else None.
        kv_blocks: the paged cache, else None.
        freqs_cis: the rope table, else None.
    """

    rows: str
    row_offsets: str
    lengths: str
    lookup_table: str | None = None
    kv_blocks: str | None = None
    freqs_cis: str | None = None

    def operand(self, op: Operation, role: str) -> SSAValue | None:
        """The SSA value playing `role` (a field name above) in `op`, or None."""
        name = getattr(self, role)
        return None if name is None else getattr(op, name)


def ragged_operands(op: Operation) -> RaggedOperands | None:
    """The op's declared ragged operands, or None for an op that takes no ragged batch."""
    return op.get_trait(RaggedOperands)
