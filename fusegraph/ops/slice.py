"""Indexing ops: `fg.slice` (strided slices of every dim) and `fg.gather` (select rows
along one axis by an index tensor).

`TensorValue.__getitem__` calls `slice_tensor`, so `x[1:, ::2]`, `x[-1]` and `x[..., :64]`
all build IR. An integer index is a length-1 slice followed by a `fg.reshape` that drops
the dim, so `fg.slice` itself always keeps the rank.

Example:
    >>> last = x[-1]                         # x [T, 64] -> [64]
    >>> rows = ops.gather(table, positions, axis=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import Index, IndexItem, TensorValue
from fusegraph.ops._common import expect_dtype, expect_same_device, expect_tensor, normalize_axis

END = 2**63 - 1
"""A stop that means "to the end of the dim" (torch's `aten.slice` uses the same value)."""

_INDEX_DTYPES = (DType.int32, DType.int64, DType.uint32)
_NAMES = ("starts", "stops", "steps")
#: `(start, stop, step)` of one dim.
Bounds = tuple[int, int, int]


# --- slice ----------------------------------------------------------------------------
@register_op
@irdl_op_definition
class SliceOp(FgOp):
    """`fg.slice {starts = array<i64: 1, 0>, stops = array<i64: 5, 64>, steps = array<i64: 1, 2>}`

    One `start:stop:step` per input dim, with Python semantics. On static dims the bounds
    are normalized (non-negative, clamped). On symbolic dims a negative bound counts from
    the end and a stop of `END` (2**63-1) means the end; a non-negative bound is assumed to
    lie within the dim at run time.
    """

    name = "fg.slice"
    input = operand_def(TensorType)
    starts = prop_def(DenseArrayBase)
    stops = prop_def(DenseArrayBase)
    steps = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: Operand, *, bounds: Sequence[Bounds]) -> None:
        props = {k: DenseArrayBase.from_list(i64, [b[i] for b in bounds]) for i, k in enumerate(_NAMES)}
        super().__init__([input], props, rule=partial(self.rule, bounds=bounds))

    @property
    def bounds(self) -> list[Bounds]:
        """`(start, stop, step)` per input dim."""
        return list(
            zip(self.starts.get_values(), self.stops.get_values(), self.steps.get_values(), strict=False)
        )

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, bounds=self.bounds)

    @staticmethod
    def rule(x: Attribute, *, bounds: Sequence[Bounds]) -> list[Attribute]:
        """The shape rule: one `(start, stop, step)` per dim of x, each step > 0."""
        x = expect_tensor("fg.slice", "input", x)
        if len(bounds) != x.rank:
            raise ValueError(f"fg.slice: {len(bounds)} bounds for input of rank {x.rank}")
        shape = [_slice_length(axis, d, *b) for axis, (d, b) in enumerate(zip(x.shape, bounds))]
        return [TensorType(x.dtype, shape, x.device)]


def _slice_length(axis: int, d: Dim, start: int, stop: int, step: int) -> Dim:
    if step <= 0:
        raise ValueError(f"fg.slice: dim {axis} step must be > 0, got {step}")
    if d.is_static:
        return Dim(len(range(*slice(start, stop, step).indices(d.value))))
    lo = d - (-start) if start < 0 else Dim(start)
    hi = d if stop == END else (d - (-stop) if stop < 0 else Dim(stop))
    extent = hi - lo
    if step == 1:
        return extent
    if not extent.is_static:
        raise ValueError(
            f"fg.slice: dim {axis} ({d}) step {step} needs a static extent, got {extent}; "
            "slice the dim with step 1 first, or reshape"
        )
    return Dim(len(range(0, max(extent.value, 0), step)))


def slice_tensor(x: TensorValue, index: Index) -> TensorValue:
    """`x[index]` with Python indexing: ints, slices (step > 0) and one `...`.

    Args:
        x: the tensor to index.
        index: an int, a slice, `...`, or a tuple of them; negative values count from the end.

    Returns:
        The sliced tensor; integer-indexed dims are dropped.

    Example:
        >>> y = ops.slice_tensor(x, (slice(1, None), -1))   # x[1:, -1]
    """
    bounds, dropped = _expand_index(x, index if isinstance(index, tuple) else (index,))
    bounds = [_normalize(axis, d, b) for axis, (d, b) in enumerate(zip(x.shape, bounds))]
    result = emit_tensor(SliceOp(x, bounds=bounds))
    if not dropped:
        return result
    from fusegraph.ops.shape import reshape

    return reshape(result, [d for axis, d in enumerate(result.shape) if axis not in dropped])


def _expand_index(x: TensorValue, index: tuple[IndexItem, ...]) -> tuple[list[Bounds], set[int]]:
    """One `(start, stop, step)` per dim, and the dims an int index drops."""
    if sum(item is Ellipsis for item in index) > 1:
        raise ValueError(f"fg.slice: at most one '...' in an index, got {index}")
    explicit = len(index) - (Ellipsis in index)
    if explicit > x.rank:
        raise ValueError(f"fg.slice: too many indices ({explicit}) for input of rank {x.rank}")
    bounds: list[Bounds] = []
    dropped: set[int] = set()
    for item in index:
        if item is Ellipsis:
            bounds += [(0, END, 1)] * (x.rank - explicit)
        elif isinstance(item, slice):
            bounds.append(_slice_bounds(len(bounds), item))
        elif isinstance(item, int) and not isinstance(item, bool):
            dropped.add(len(bounds))
            bounds.append(_int_bounds(len(bounds), x.shape[len(bounds)], item))
        else:
            raise ValueError(
                f"fg.slice: index items must be int, slice or ..., got {type(item).__name__} {item!r}"
            )
    bounds += [(0, END, 1)] * (x.rank - len(bounds))
    return bounds, dropped


def _slice_bounds(axis: int, item: slice) -> Bounds:
    step = 1 if item.step is None else item.step
    if not all(v is None or isinstance(v, int) for v in (item.start, item.stop, item.step)):
        raise ValueError(f"fg.slice: dim {axis} slice bounds must be ints or None, got {item}")
    if step <= 0:
        raise ValueError(f"fg.slice: dim {axis} step must be > 0, got {step}")
    return (0 if item.start is None else item.start, END if item.stop is None else item.stop, step)


def _int_bounds(axis: int, d: Dim, i: int) -> Bounds:
    if d.is_static and not -d.value <= i < d.value:
        raise ValueError(f"fg.slice: index {i} out of range for dim {axis} of size {d.value}")
    return (i, END if i == -1 else i + 1, 1)


def _normalize(axis: int, d: Dim, bounds: Bounds) -> Bounds:
    """Absolute, clamped bounds on static dims; symbolic dims keep the Python form."""
    start, stop, step = bounds
    if not d.is_static:
        return bounds
    lo, hi, _ = slice(start, stop, step).indices(d.value)
    return (lo, max(hi, lo), step)


@torch_impl(SliceOp)
def _slice_torch(op: SliceOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    index = tuple(slice(start, stop, step) for start, stop, step in op.bounds)
    return x[index]


# --- gather ---------------------------------------------------------------------------
@register_op
@irdl_op_definition
class GatherOp(FgOp):
    """`fg.gather {axis = 0}`: `x.shape[:axis] + indices.shape + x.shape[axis+1:]`."""

    name = "fg.gather"
    input = operand_def(TensorType)
    indices = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $indices attr-dict `:` type($input) `,` type($indices) `->` type($result)"

    def __init__(self, input: Operand, indices: Operand, *, axis: int) -> None:
        props = {"axis": IntegerAttr(axis, i64)}
        super().__init__([input, indices], props, rule=partial(self.rule, axis=axis))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, self.indices.type, axis=self.axis.value.data)

    @staticmethod
    def rule(x: Attribute, indices: Attribute, *, axis: int) -> list[Attribute]:
        """The shape rule: `x.shape[:axis] + indices.shape + x.shape[axis+1:]`; int indices."""
        x = expect_tensor("fg.gather", "input", x)
        indices = expect_tensor("fg.gather", "indices", indices)
        expect_dtype("fg.gather", "indices", indices, _INDEX_DTYPES)
        expect_same_device("fg.gather", input=x, indices=indices)
        axis = normalize_axis("fg.gather", axis, x.rank)
        return [TensorType(x.dtype, [*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]], x.device)]


def gather(x: TensorValue, indices: TensorValue, axis: int = 0) -> TensorValue:
    """Select entries of `x` along `axis` by an int32/int64/uint32 index tensor.

    Example:
        >>> rows = ops.gather(freqs_cis, positions, axis=0)   # [max_pos, D], [T] -> [T, D]
    """
    return emit_tensor(GatherOp(x, indices, axis=axis))


@torch_impl(GatherOp)
def _gather_torch(
    op: GatherOp, x: torch.Tensor, indices: torch.Tensor, *, ctx: LoweringContext
) -> torch.Tensor:
    # A flattened 1-D index_select: the form IREE legalizes (see ARCHITECTURE.md's traps).
    axis = normalize_axis(op.name, op.axis.value.data, x.dim())
    flat = torch.index_select(x, axis, indices.reshape(-1).to(torch.int64))
    return flat.reshape(ctx.sizes(op.result.type.shape))
