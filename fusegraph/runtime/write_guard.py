"""Refuse bad step metadata before a compiled graph writes anything, without a host sync on CUDA.

On the CPU the shared host checks (`input_checks.py`) refuse bad metadata before the module
runs; reading CPU tensors costs nothing. On CUDA a host check would copy the metadata to the
host and stall the GPU on every call, so the runtime checks on the device instead:

1. first in every step (inside the CUDA graph when one is captured), one launch per distinct
   (row offsets, cache lengths, lookup table, cache) of the graph's buffer writes and rope
   ops checks what the host checks check (`kernels/write_flag.py`): row offsets that rise
   from 0 to the row count, positions inside the rope table, pages the lookup row names,
   and no block written by two sequences. A failure sets that cache's device flag; the flag
   stays set until reported;
2. every cache-writing kernel reads the flag and writes nothing while it is set; no kernel
   reads out of bounds on refused metadata (the rope table reads are clamped or masked);
3. after the step the flag is copied to pinned host memory without blocking; the next call
   reads that copy (no sync) and raises the same `ValueError` as the host check, naming the
   op, the operand and the sequence. `CompiledGraph.synchronize()` waits for the queued
   steps and raises at once.

So nothing is written by the refused step, nor by any step queued after it before the
refusal is raised; the flag is cleared when it is raised, and the model can run on. A rope
check on a graph that writes no cache sets a flag of its own, reported the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import evaluate_dim
from fusegraph.runtime.input_checks import MetadataUse, metadata_uses

if TYPE_CHECKING:
    from fusegraph.runtime.kernels.write_flag import CacheFlag

__all__ = ["DeviceWriteGuards", "WriteGuard", "refusal_message", "write_guards"]


@dataclass(frozen=True)
class WriteGuard:
    """One device check: graph-input indices of its operands, its row count, what it checks.

    Attributes:
        op: the write op, named by a capacity or shared-block refusal.
        rows: the row count of the op's token operand (a dim of the graph).
        kv_blocks: the cache whose flag a refusal sets (None: the guards' own flag).
        row_offsets, cache_lengths: graph-input indices of the metadata.
        lookup_table: graph-input index of the lookup table, or None (no page checks).
        rope_op: the rope op whose table the positions must stay inside, or None.
        max_pos, freqs_input, tables: the table's positions when static, else the graph input
            holding `freqs_cis` and how many tables it stacks (`MetadataUse`).
        offsets_op: the op named by a row-offsets refusal (the first in program order).
    """

    op: str
    rows: Dim
    kv_blocks: int | None
    row_offsets: int
    cache_lengths: int
    lookup_table: int | None
    rope_op: str | None = None
    max_pos: int | None = None
    freqs_input: int | None = None
    tables: int = 1
    offsets_op: str | None = None


def write_guards(graph: Graph) -> list[WriteGuard]:
    """The distinct device checks of the graph's buffer writes and rope tables, where the
    metadata are graph inputs (computed metadata: only the ops' own checks apply).

    A rope check joins the write check of the same metadata when the graph writes one cache;
    otherwise it is launched for every written cache (or on the guards' own flag), so that a
    refused rope position stops every write of the step.
    """
    uses = metadata_uses(graph, strict=False)
    writes: dict[WriteGuard, int] = {}  # -> program order of its first use
    ropes: dict[WriteGuard, int] = {}
    for order, use in enumerate(uses):
        key = (use.row_offsets, use.lengths)
        if use.writes:
            guard = WriteGuard(use.op, use.rows, use.kv_blocks, *key, use.lookup_table)
            writes.setdefault(guard, order)
        if use.max_pos is not None or use.freqs_input is not None:
            ropes.setdefault(_rope_guard(use), order)
    caches = sorted({g.kv_blocks for g in writes if g.kv_blocks is not None})
    guards = list(writes)
    for rope, order in ropes.items():
        same = [
            i for i, g in enumerate(guards)
            if (g.row_offsets, g.cache_lengths, g.rows) == (rope.row_offsets, rope.cache_lengths, rope.rows)
            and g.rope_op is None and g.lookup_table is not None
        ]  # fmt: skip
        if len(caches) == 1 and same:
            write = guards[same[0]]
            first = rope.op if order < writes[write] else write.op
            guards[same[0]] = replace(
                write, rope_op=rope.op, max_pos=rope.max_pos, freqs_input=rope.freqs_input,
                tables=rope.tables, offsets_op=first,
            )  # fmt: skip
        else:
            guards += [replace(rope, kv_blocks=c) for c in caches] or [rope]
    return guards


def _rope_guard(use: MetadataUse) -> WriteGuard:
    return WriteGuard(
        use.op, use.rows, None, use.row_offsets, use.lengths, None,
        use.op, use.max_pos, use.freqs_input, use.tables, use.op,
    )  # fmt: skip


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
        self.op_ids = [
            (op_id(g.op), op_id(g.rope_op or g.op), op_id(g.offsets_op or g.op)) for g in self.guards
        ]
        self.caches = sorted({g.kv_blocks for g in self.guards if g.kv_blocks is not None})
        self.recent: dict[int, torch.Tensor] = {}  # graph-input index -> the latest step's cache
        self.own: CacheFlag | None = None  # for rope checks of a graph that writes no cache

    def launch(self, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> None:
        """Launch every check (one kernel each, no host sync)."""
        from fusegraph.runtime.kernels.write_flag import cache_flag, check_capacity_on_device, new_flag

        for guard, (write_op, rope_op, offsets_op) in zip(self.guards, self.op_ids):
            if guard.kv_blocks is None:
                if self.own is None:
                    self.own = new_flag(inputs[guard.row_offsets].device)
                flag, num_blocks, page_size = self.own, 0, 1
            else:
                kv = inputs[guard.kv_blocks]
                flag, num_blocks, page_size = cache_flag(kv), kv.shape[0], kv.shape[3]
            paged = guard.lookup_table is not None
            max_pos = guard.max_pos
            if max_pos is None and guard.freqs_input is not None:
                max_pos = inputs[guard.freqs_input].shape[0] // guard.tables
            check_capacity_on_device(
                flag.device_words, inputs[guard.row_offsets], inputs[guard.cache_lengths],
                inputs[guard.lookup_table] if paged else None,  # type: ignore[index]
                int(evaluate_dim(guard.rows, dims)), num_blocks, page_size, write_op,
                owners=flag.owners(num_blocks) if paged else None, max_pos=max_pos,
                rope_op=rope_op, offsets_op=offsets_op,
            )  # fmt: skip

    def publish(self, inputs: Sequence[torch.Tensor]) -> None:
        """Copy each flag to its pinned host mirror, queued after the step."""
        for flag in self._flags(inputs):
            flag.host_words.copy_(flag.device_words, non_blocking=True)
        self.recent = {i: inputs[i] for i in self.caches}

    def raise_if_refused(self, inputs: Sequence[torch.Tensor] | None = None, wait: bool = False) -> None:
        """Raise the refusal an earlier step recorded on these inputs' caches (None: the caches
        of the latest step). Reads the pinned copies (no sync) unless `wait`, which first waits
        for the steps queued on the caches' devices. A refusal that set several flags (a rope
        position, checked for every written cache) is raised once: every flag is cleared."""
        flags = self._flags(inputs)
        devices = {flag.device_words.device for flag in flags}
        if wait:
            for device in devices:
                torch.cuda.synchronize(device)
        refused = next((flag for flag in flags if int(flag.host_view[0]) != 0), None)
        if refused is None:
            return
        for device in devices:  # the error path: let queued steps finish
            torch.cuda.synchronize(device)
        words = refused.device_words.tolist()
        for flag in flags:
            flag.clear()
        raise ValueError(refusal_message(words))

    def _flags(self, inputs: Sequence[torch.Tensor] | None) -> list[CacheFlag]:
        from fusegraph.runtime.kernels.write_flag import cache_flag

        caches = [inputs[i] for i in self.caches] if inputs is not None else list(self.recent.values())
        return [cache_flag(kv) for kv in caches] + ([self.own] if self.own is not None else [])


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
    if code == 3:
        return (
            f"{op}: sequence {seq} reaches position {a}, past the rope table's {b} positions "
            f"(freqs_cis rows, the model's max_seq_len){after}"
        )
    if code == 4:
        return (
            f"{op}: sequences {a} and {seq} both write block {b} of kv_blocks; each sequence must "
            f"write only its own pages{after}"
        )
    bad = f"; entry {b} is {c}, past num_blocks {num_blocks}" if c >= 0 else ""
    return (
        f"{op}: sequence {seq} would reach position {a}, past its capacity of {b * page_size} tokens "
        f"({b} pages of {page_size} in lookup_table row {seq}{bad}){after}"
    )
