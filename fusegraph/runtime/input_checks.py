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
- a non-contiguous buffer input (the KV blocks are written in place);
- a dim of the graph that the call's sizes make negative or fractional (`n - 11` with
  n = 8: a slice `x[11:]` of 8 rows), naming the dim, where it is, and its value;
- a `perm` operand (`fg.rms_norm`, `fg.attention.paged`, ...) fed by a graph input that is not
  a permutation (`check_perms`: each tensor read once, again only after it is written; IREE would
  read 0 for an entry out of range, a silent wrong answer).

`check_host` is the part that reads no tensor values (shapes, strides, dims): the CUDA eager
runtime runs it on every call and checks the values on the device (`write_guard.py`).

So IREE, which has no bounds checks, is never handed metadata that can index out of bounds,
and both backends refuse the same inputs with the same messages. `check_weights` runs once,
when weights are bound: every GPTQ `g_idx` entry must name a group, every scale be finite, every
`perm` operand bound to a weight be a permutation.

Example:
    >>> checks = InputChecks.for_graph(graph, weights=dict(zip(graph.weights, bound)))
    >>> dims = check_inputs(types, inputs, device)     # dtypes, ranks, static dims
    >>> checks.check(inputs, dims)                      # raises before any write
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from xdsl.ir import BlockArgument, Operation, SSAValue

from fusegraph.compiler.dims import Dim, symbol_expr
from fusegraph.compiler.effects import ragged_operands, writes_buffer
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import evaluate_dim
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.runtime.weight_checks import perm_operands

__all__ = [
    "InputChecks",
    "MetadataUse",
    "buffer_root",
    "graph_dims",
    "metadata_uses",
]


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
        if (ragged := ragged_operands(op)) is None:
            continue
        role = {r: ragged.operand(op, r) for r in ("row_offsets", "lengths", "lookup_table", "kv_blocks")}
        if role["kv_blocks"] is not None:
            role["kv_blocks"] = buffer_root(role["kv_blocks"])
        if not strict and not all(isinstance(v, BlockArgument) for v in role.values() if v is not None):
            continue  # computed metadata: only the op's own check (eager CPU) applies
        names = {"row_offsets": ragged.row_offsets, "lengths": ragged.lengths, "lookup_table": "lookup_table",
                 "kv_blocks": "kv_blocks"}  # fmt: skip
        index = {r: None if v is None else _input_index(op.name, names[r], v) for r, v in role.items()}
        max_pos, freqs_input, tables = None, None, 1
        if (freqs := ragged.operand(op, "freqs_cis")) is not None:
            # longrope (`long_after`) stacks a short and a long table (ops/_rope_math.py)
            tables = 2 if "long_after" in op.properties else 1
            if isinstance(freqs, BlockArgument):
                freqs_input = freqs.index
            elif (d := _shape(freqs)[0]).is_static:
                max_pos = d.value // tables
        rows_value = ragged.operand(op, "rows")
        assert rows_value is not None  # `rows` is a required field of the trait
        use = MetadataUse(
            op.name, _shape(rows_value)[0], cast(int, index["row_offsets"]), cast(int, index["lengths"]),
            index["lookup_table"], index["kv_blocks"], writes_buffer(op), max_pos, freqs_input, tables,
        )  # fmt: skip
        uses[use] = None
    return list(uses)


def _shape(value: SSAValue) -> tuple[Dim, ...]:
    return tuple(cast(TensorType | BufferType, value.type).shape)


def _input_index(op: str, operand: str, value: SSAValue | None) -> int:
    if not isinstance(value, BlockArgument):
        raise ValueError(
            f"{op}: {operand} is computed inside the graph; the runtime checks the ragged "
            "metadata before running, so it must be a graph input"
        )
    return value.index


def buffer_root(value: SSAValue) -> BlockArgument | None:
    """The graph input a buffer version descends from (through earlier in-place writes)."""
    while not isinstance(value, BlockArgument):
        owner = value.owner
        if not isinstance(owner, Operation) or (written := _written_buffer(owner)) is None:
            return None
        value = written
    return value


def _written_buffer(op: Operation) -> SSAValue | None:
    """The buffer operand an in-place writer writes (its paged cache), or None."""
    if not writes_buffer(op):
        return None
    if (ragged := ragged_operands(op)) is not None and ragged.kv_blocks is not None:
        return ragged.operand(op, "kv_blocks")
    buffers = [v for v in op.operands if isinstance(v.type, BufferType)]
    return buffers[0] if len(buffers) == 1 else None


def graph_dims(graph: Graph) -> list[tuple[str, Dim]]:
    """Every distinct algebraic dim of the graph's inputs and op results, with where it first
    appears (`fg.slice result 0 dim 0`): the dims a call's sizes could make negative."""
    found: dict[Dim, str] = {}
    values: list[tuple[str, SSAValue]] = [(f"input {a.index}", a) for a in graph.block.args]
    for op in graph.block.ops:
        values += [(f"{op.name} result {r.index}", r) for r in op.results]
    for where, value in values:
        if not isinstance(value.type, TensorType | BufferType):
            continue
        for axis, d in enumerate(value.type.shape):
            if d.is_algebraic and d not in found:
                found[d] = f"{where} dim {axis}"
    return [(where, d) for d, where in found.items()]


class InputChecks:
    """The per-call metadata checks of one graph (see the module docstring).

    Attributes:
        uses: the metadata uses checked on each call.
        buffers: graph-input indices of the buffer inputs (checked contiguous).
        dims: the graph's algebraic dims and where they appear (checked >= 0 and whole).
    """

    def __init__(
        self,
        uses: Sequence[MetadataUse],
        buffers: Sequence[int],
        dims: Sequence[tuple[str, Dim]] = (),
        perms: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.uses = list(uses)
        self.buffers = list(buffers)
        self.dims = list(dims)
        self.perms = list(perms)
        self._dims_ok: set[tuple[tuple[str, int], ...]] = set()  # bindings already checked

    @classmethod
    def for_graph(cls, graph: Graph, strict: bool = True) -> InputChecks:
        """The checks `graph`'s ragged ops need (see `metadata_uses` for `strict`)."""
        buffers = [a.index for a in graph.block.args if isinstance(a.type, BufferType)]
        perms = [(op.name, v.index) for op, v in perm_operands(graph) if isinstance(v, BlockArgument)]
        return cls(metadata_uses(graph, strict), buffers, graph_dims(graph), perms)

    def check_host(self, inputs: Sequence[torch.Tensor], dims: Mapping[str, int]) -> None:
        """The checks that read no tensor values (no host sync on CUDA): contiguous buffers,
        `batch + 1` row offsets, and the graph's dims whole and >= 0 for these sizes.

        Raises:
            ValueError: the first failed check, naming the input or the dim.
        """
        for i in self.buffers:
            if not inputs[i].is_contiguous():
                raise ValueError(
                    f"input {i}: the buffer must be contiguous (it is written in place), got strides "
                    f"{list(inputs[i].stride())} for shape {list(inputs[i].shape)}"
                )
        for use in self.uses:
            entries, batch = inputs[use.row_offsets].shape[0], inputs[use.lengths].shape[0]
            if entries != batch + 1:
                raise ValueError(
                    f"{use.op}: input_row_offsets has {entries} entries; it needs batch + 1 = {batch + 1} "
                    f"(cache_lengths has {batch})"
                )
        if self.dims:
            self._check_dims(dims)

    def check(self, inputs: Sequence[torch.Tensor], dims: Mapping[str, int]) -> None:
        """Refuse bad metadata before anything runs (inputs already passed `check_inputs`).

        Raises:
            ValueError: the first failed check, naming the op, the operand and the sequence.
        """
        self.check_host(inputs, dims)
        self.check_perms(inputs)
        host: dict[int, list[int] | list[list[int]]] = {}

        def values(i: int) -> list[int]:
            if i not in host:  # one host copy per metadata tensor, shared by every use
                host[i] = inputs[i].to(torch.int64).tolist()
            return cast(list[int], host[i])

        for use in self.uses:
            rows = int(evaluate_dim(use.rows, dims))
            ro, ln = values(use.row_offsets), values(use.lengths)
            _check_row_offsets(use.op, ro, ln, rows)
            max_pos = use.max_pos
            if max_pos is None and use.freqs_input is not None:
                max_pos = inputs[use.freqs_input].shape[0] // use.tables
            if max_pos is not None:
                _check_rope_positions(use.op, ro, ln, max_pos)
            if use.lookup_table is not None and use.kv_blocks is not None:
                kv = inputs[use.kv_blocks]
                lookup = cast(list[list[int]], values(use.lookup_table))
                blocks = _check_pages(use.op, ro, ln, lookup, kv.shape[0], kv.shape[3])
                if use.writes:
                    _check_private_writes(use.op, blocks)

    def check_host_and_perms(self, inputs: Sequence[torch.Tensor], dims: Mapping[str, int]) -> None:
        """`check_host`, then `check_perms`: what the CUDA runtimes (eager, IREE with device checks) run on the host
        before a step whose metadata values the device checks."""
        self.check_host(inputs, dims)
        self.check_perms(inputs)

    def check_perms(self, inputs: Sequence[torch.Tensor]) -> None:
        """Refuse a `perm` input that is not a permutation of 0..len-1 (`ops.norm.check_perm`: one host read a
        tensor, again only after it is written), naming the op and the first bad entry."""
        from fusegraph.ops.norm import check_perm

        for op, i in self.perms:
            check_perm(inputs[i], inputs[i].shape[0], op)

    def _check_dims(self, dims: Mapping[str, int]) -> None:
        key = tuple(sorted(dims.items()))
        if key in self._dims_ok:
            return
        for where, d in self.dims:
            if not d.symbols <= dims.keys():
                continue  # a size no input fixes (a weight's): checked when weights are bound
            value = d.expr.subs({symbol_expr(n): dims[n] for n in d.symbols})
            if value.is_Integer and value >= 0:
                continue
            bound = ", ".join(f"{n} = {dims[n]}" for n in sorted(d.symbols))
            why = "below zero" if value.is_Integer else "not a whole number"
            raise ValueError(
                f"dim {d} ({where}) is {value} with {bound}: {why}; the inputs are too small for "
                "the graph (every dim must be a whole number >= 0)"
            )
        if len(self._dims_ok) < 256:
            self._dims_ok.add(key)


def _check_row_offsets(op: str, ro: list[int], ln: list[int], rows: int) -> None:
    if ro[0] != 0 or ro[-1] != rows or any(a > b for a, b in zip(ro, ro[1:])):
        falls = next(
            (f", entry {b + 1} falls below entry {b}" for b in range(len(ln)) if ro[b + 1] < ro[b]), ""
        )
        raise ValueError(  # worded as the CUDA device check can (write_guard.refusal_message)
            f"{op}: input_row_offsets must rise from 0 to the {rows} rows of the input "
            f"(first entry {ro[0]}, last entry {ro[-1]}{falls})"
        )


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
