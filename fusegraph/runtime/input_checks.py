"""The metadata and weight checks every backend runs before it writes anything.

A compiled graph (eager or IREE) builds one `InputChecks` from its graph at compile time and
calls `check(inputs, dims)` on every call, after the type check and before the module runs.
The checks read the ragged metadata on the host (one copy per tensor) and refuse, with a
`ValueError` naming the op, the operand and the sequence:

- `input_row_offsets` that do not have `batch + 1` entries, do not start at 0, fall, or do
  not end at the op's row count;
- a sequence whose new positions need a page its lookup row does not name (an overflow past
  its capacity, or a lookup entry past `num_blocks`): writes and paged reads alike;
- two sequences that write the same cache block in one step;
- a position past the rope table (`freqs_cis` rows, the model's `max_seq_len`);
- a non-contiguous buffer input (the KV blocks are written in place).

So IREE, which has no bounds checks, is never handed metadata that can index out of bounds,
and both backends refuse the same inputs with the same messages. `check_weights` runs once,
when weights are bound: every GPTQ `g_idx` entry must name a group, every scale be finite.

Example:
    >>> checks = InputChecks.for_graph(graph, weights=dict(zip(graph.weights, bound)))
    >>> dims = check_inputs(types, inputs, device)     # dtypes, ranks, static dims
    >>> checks.check(inputs, dims)                      # raises before any write
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from xdsl.ir import BlockArgument, SSAValue

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.registry import evaluate_dim
from fusegraph.compiler.types import BufferType

__all__ = ["WRITE_OPERANDS", "InputChecks", "MetadataUse", "buffer_root", "check_weights", "metadata_uses"]

# op name -> operand index of (rows tensor, row offsets, lengths, lookup, kv_blocks, freqs_cis)
_USES: dict[str, tuple[int, int, int, int | None, int | None, int | None]] = {
    "fg.kv_cache.store": (1, 2, 3, 4, 0, None),
    "fg.rope_split_store": (0, 1, 4, 5, 3, 2),
    "fg.attention.paged": (0, 1, 3, 4, 2, None),
    "fg.rope": (0, 1, 2, None, None, 3),
}
_WRITES = ("fg.kv_cache.store", "fg.rope_split_store")
# op name -> operand index of (rows tensor, kv_blocks, row offsets, lengths, lookup): the writes
WRITE_OPERANDS: dict[str, tuple[int, int, int, int, int]] = {
    name: (rows, kv, ro, lengths, lookup)  # type: ignore[misc]
    for name, (rows, ro, lengths, lookup, kv, _) in _USES.items()
    if name in _WRITES
}
_BUFFER_OPERAND = {name: slots[1] for name, slots in WRITE_OPERANDS.items()}


@dataclass(frozen=True)
class MetadataUse:
    """One op's use of the ragged metadata, as graph-input indices.

    Attributes:
        op: the op name (`fg.rope_split_store`, ...).
        rows: the row count of the op's token operand (a dim of the graph).
        row_offsets, lengths: graph-input indices of `input_row_offsets` and
            `cache_lengths` (`start_pos` for `fg.rope`).
        lookup_table, kv_blocks: graph-input indices for paged ops, else None.
        writes: the op writes `kv_blocks`.
        max_pos: the rope table's positions (`freqs_cis` dim 0 over its stacked tables)
            when static, else None.
        freqs_input: the graph input that holds `freqs_cis` when it is not a weight.
        tables: how many tables `freqs_cis` stacks (2 for longrope), to divide dim 0 by.
    """

    op: str
    rows: Dim
    row_offsets: int
    lengths: int
    lookup_table: int | None = None
    kv_blocks: int | None = None
    writes: bool = False
    max_pos: int | None = None
    freqs_input: int | None = None
    tables: int = 1


def metadata_uses(graph: Graph, strict: bool = True) -> list[MetadataUse]:
    """The distinct metadata uses of the graph's ragged ops, in program order.

    Args:
        graph: the graph.
        strict: refuse an op whose metadata (or kv_blocks) is computed inside the graph
            rather than passed in (it cannot be checked before the graph runs); otherwise
            skip it (the eager CPU ops still check their own operands).

    Raises:
        ValueError: (strict) such an op, naming it and the operand.
    """
    uses: dict[MetadataUse, None] = {}
    for op in graph.block.ops:
        if (slots := _USES.get(op.name)) is None:
            continue
        rows_i, ro_i, ln_i, lt_i, kv_i, fr_i = slots
        operands = op.operands
        if not strict and not _all_inputs(op.operands, slots):
            continue
        index = {name: _input_index(op.name, name, operands[i]) for name, i in
                 (("input_row_offsets", ro_i), ("cache_lengths", ln_i))}  # fmt: skip
        lookup = None if lt_i is None else _input_index(op.name, "lookup_table", operands[lt_i])
        kv = None if kv_i is None else _input_index(op.name, "kv_blocks", buffer_root(operands[kv_i]))
        max_pos, freqs_input, tables = None, None, 1
        if fr_i is not None:
            # longrope (`long_after`) stacks a short and a long table (ops/_rope_math.py)
            freqs, tables = operands[fr_i], 2 if "long_after" in op.properties else 1
            if isinstance(freqs, BlockArgument):
                freqs_input = freqs.index
            elif (d := freqs.type.shape[0]).is_static:  # type: ignore[attr-defined]
                max_pos = d.value // tables
        rows = operands[rows_i].type.shape[0]  # type: ignore[attr-defined]
        use = MetadataUse(
            op.name, rows, index["input_row_offsets"], index["cache_lengths"], lookup, kv,
            op.name in _WRITES, max_pos, freqs_input, tables,
        )  # fmt: skip
        uses[use] = None
    return list(uses)


def _all_inputs(operands: Sequence[SSAValue], slots: tuple[int | None, ...]) -> bool:
    _, ro_i, ln_i, lt_i, kv_i, _ = slots
    meta = [operands[i] for i in (ro_i, ln_i, lt_i) if i is not None]
    if kv_i is not None:
        meta.append(buffer_root(operands[kv_i]))  # type: ignore[arg-type]
    return all(isinstance(v, BlockArgument) for v in meta)


def _input_index(op: str, operand: str, value: SSAValue | None) -> int:
    if not isinstance(value, BlockArgument):
        raise ValueError(
            f"{op}: {operand} is computed inside the graph; the runtime checks the ragged "
            "metadata before running, so it must be a graph input"
        )
    return value.index


def buffer_root(value: SSAValue) -> BlockArgument | None:
    """The graph input a buffer version descends from (through earlier writes)."""
    while not isinstance(value, BlockArgument):
        owner = value.owner
        slot = _BUFFER_OPERAND.get(getattr(owner, "name", ""))
        if slot is None:
            return None
        value = owner.operands[slot]  # type: ignore[union-attr]
    return value


class InputChecks:
    """The per-call metadata checks of one graph (see the module docstring).

    Attributes:
        uses: the metadata uses checked on each call.
        buffers: graph-input indices of the buffer inputs (checked contiguous).
    """

    def __init__(self, uses: Sequence[MetadataUse], buffers: Sequence[int]) -> None:
        self.uses = list(uses)
        self.buffers = list(buffers)

    @classmethod
    def for_graph(cls, graph: Graph, strict: bool = True) -> InputChecks:
        """The checks `graph`'s ragged ops need (see `metadata_uses` for `strict`)."""
        buffers = [a.index for a in graph.block.args if isinstance(a.type, BufferType)]
        return cls(metadata_uses(graph, strict), buffers)

    def check(self, inputs: Sequence[torch.Tensor], dims: Mapping[str, int]) -> None:
        """Refuse bad metadata before anything runs (inputs already passed `check_inputs`).

        Raises:
            ValueError: the first failed check, naming the op, the operand and the sequence.
        """
        for i in self.buffers:
            if not inputs[i].is_contiguous():
                raise ValueError(
                    f"input {i}: the buffer must be contiguous (it is written in place), got strides "
                    f"{list(inputs[i].stride())} for shape {list(inputs[i].shape)}"
                )
        host: dict[int, list] = {}

        def values(i: int) -> list:
            if i not in host:  # one host copy per metadata tensor, shared by every use
                host[i] = inputs[i].to(torch.int64).tolist()
            return host[i]

        for use in self.uses:
            rows = int(evaluate_dim(use.rows, dims))
            ro, ln = values(use.row_offsets), values(use.lengths)
            _check_row_offsets(use.op, ro, ln, rows)
            if use.max_pos is not None or use.freqs_input is not None:
                max_pos = use.max_pos
                if max_pos is None:
                    max_pos = inputs[use.freqs_input].shape[0] // use.tables  # type: ignore[index]
                _check_rope_positions(use.op, ro, ln, max_pos)
            if use.lookup_table is not None and use.kv_blocks is not None:
                kv = inputs[use.kv_blocks]
                blocks = _check_pages(use.op, ro, ln, values(use.lookup_table), kv.shape[0], kv.shape[3])
                if use.writes:
                    _check_private_writes(use.op, blocks)


def _check_row_offsets(op: str, ro: list[int], ln: list[int], rows: int) -> None:
    if len(ro) != len(ln) + 1:
        raise ValueError(
            f"{op}: input_row_offsets has {len(ro)} entries; it needs batch + 1 = {len(ln) + 1} "
            f"(cache_lengths has {len(ln)})"
        )
    if ro[0] != 0 or ro[-1] != rows or any(a > b for a, b in zip(ro, ro[1:])):
        raise ValueError(f"{op}: input_row_offsets {ro} must rise from 0 to the {rows} rows of the input")


def _check_rope_positions(op: str, ro: list[int], ln: list[int], max_pos: int) -> None:
    for b, cached in enumerate(ln):
        if (new := ro[b + 1] - ro[b]) and cached + new > max_pos:
            raise ValueError(
                f"{op}: sequence {b} reaches position {cached + new - 1}, past the rope table's "
                f"{max_pos} positions (freqs_cis rows, the model's max_seq_len)"
            )


def _check_pages(
    op: str, ro: list[int], ln: list[int], lookup: list[list[int]], num_blocks: int, page_size: int
) -> list[list[int]]:
    """Every page up to each sequence's last new position must name a block. Returns the
    blocks each sequence writes (its pages holding new positions)."""
    blocks: list[list[int]] = []
    for b, cached in enumerate(ln):
        new = ro[b + 1] - ro[b]
        if new == 0:
            blocks.append([])
            continue
        last = cached + new - 1
        pages = lookup[b]
        valid = next((i for i, blk in enumerate(pages) if blk >= num_blocks), len(pages))
        if last // page_size >= valid:
            bad = (
                f"; entry {valid} is {pages[valid]}, past num_blocks {num_blocks}"
                if valid < len(pages)
                else ""
            )
            raise ValueError(
                f"{op}: sequence {b} would reach position {last}, past its capacity of "
                f"{valid * page_size} tokens ({valid} pages of {page_size} in lookup_table row {b}{bad})"
            )
        blocks.append(pages[cached // page_size : last // page_size + 1])
    return blocks


def _check_private_writes(op: str, blocks: list[list[int]]) -> None:
    """No two sequences of one call write the same block of the same cache (isolation)."""
    owner: dict[int, int] = {}
    for b, seq_blocks in enumerate(blocks):
        for blk in seq_blocks:
            if (other := owner.setdefault(blk, b)) != b:
                raise ValueError(
                    f"{op}: sequences {other} and {b} both write block {blk} of kv_blocks; "
                    "each sequence must write only its own pages"
                )


def check_weights(graph: Graph, weights: Mapping[str, torch.Tensor]) -> None:
    """Check bound weight values once: GPTQ `g_idx` entries in `[0, groups)`, finite scales.

    Args:
        graph: the compiled graph.
        weights: name -> bound tensor (any device), for every weight of the graph.

    Raises:
        ValueError: naming the weight, the bad entry and the allowed range.
    """
    weight_of = {op.results[0]: op.weight_name for op in graph.block.ops if op.name == "fg.weight"}  # type: ignore[attr-defined]
    for op in graph.block.ops:
        if op.name != "fg.qmatmul.gptq":
            continue
        scales_name = weight_of.get(op.scales)  # type: ignore[attr-defined]
        g_idx_name = weight_of.get(op.g_idx) if op.g_idx is not None else None  # type: ignore[attr-defined]
        groups = op.scales.type.shape[0]  # type: ignore[attr-defined]
        if scales_name is not None and not bool(torch.isfinite(scales := weights[scales_name]).all()):
            bad = torch.nonzero(~torch.isfinite(scales))[0].tolist()
            raise ValueError(
                f"weight {scales_name!r}: scales must be finite, but entry {bad} is {scales[tuple(bad)].item()}"
            )
        if g_idx_name is None or not groups.is_static:
            continue
        g_idx = weights[g_idx_name]
        wrong = torch.nonzero((g_idx < 0) | (g_idx >= groups.value))
        if wrong.numel():
            i = int(wrong[0, 0])
            raise ValueError(
                f"weight {g_idx_name!r}: g_idx entries must lie in [0, {groups.value}) (the groups of "
                f"{scales_name or 'scales'}), but entry {i} is {int(g_idx[i])}"
            )
