"""Shape ops: reshape, permute (and `transpose`), concat, split.

Example:
    >>> q, k, v = ops.split(qkv, [4096, 1024, 1024], axis=1)
    >>> heads = q.reshape(["total_seq_len", 32, 128])
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure

from fusegraph.compiler.dims import Dim, DimLike, product
from fusegraph.compiler.graph import emit, emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType, shape_str
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_same_device, expect_tensor, normalize_axis


# --- reshape --------------------------------------------------------------------------
@register_op
@irdl_op_definition
class ReshapeOp(FgOp):
    """`fg.reshape`: same elements, new shape (the result type's)."""

    name = "fg.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: Operand, *, shape: Sequence[DimLike]) -> None:
        super().__init__([input], rule=partial(self.rule, shape=shape))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, shape=self.result.type.shape)

    @staticmethod
    def rule(x: Attribute, *, shape: Sequence[DimLike]) -> list[Attribute]:
        """The shape rule: `shape` (one dim may be -1, inferred) keeps x's element count."""
        x = expect_tensor("fg.reshape", "input", x)
        dims = _infer_minus_one(x, shape)
        if x.num_elements != product(dims):
            raise ValueError(
                f"fg.reshape: input shape {shape_str(x.shape)} has {x.num_elements} elements, "
                f"target shape {shape_str(dims)} has {product(dims)}"
            )
        return [TensorType(x.dtype, dims, x.device)]


def _infer_minus_one(x: TensorType, shape: Sequence[DimLike]) -> tuple[Dim, ...]:
    holes = [i for i, d in enumerate(shape) if isinstance(d, int) and d == -1]
    if len(holes) > 1:
        raise ValueError(f"fg.reshape: at most one -1 in the target shape, got {list(shape)}")
    if not holes:
        return tuple(Dim(d) for d in shape)
    known = product([Dim(d) for i, d in enumerate(shape) if i != holes[0]])
    try:
        missing = x.num_elements // known
    except ValueError:
        raise ValueError(
            f"fg.reshape: input shape {shape_str(x.shape)} ({x.num_elements} elements) "
            f"is not divisible by the known target dims ({known})"
        ) from None
    return tuple(missing if i == holes[0] else Dim(d) for i, d in enumerate(shape))


def reshape(x: TensorValue, shape: Sequence[DimLike]) -> TensorValue:
    """Reshape `x`; one dim may be -1. Symbolic names must keep the element count.

    Example:
        >>> y = ops.reshape(x, ["total_seq_len", 32, -1])
    """
    return emit_tensor(ReshapeOp(x, shape=shape))


@torch_impl(ReshapeOp)
def _reshape_torch(op: ReshapeOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    shape = op.result.type.shape
    dynamic = [i for i, d in enumerate(shape) if not d.is_static]
    if len(dynamic) == 1:
        # One dynamic dim: let torch infer it (-1), which keeps symbolic tracing free of
        # SymInt arithmetic and guards.
        return x.reshape([-1 if i == dynamic[0] else d.value for i, d in enumerate(shape)])
    return x.reshape(ctx.sizes(shape))


# --- permute --------------------------------------------------------------------------
@register_op
@irdl_op_definition
class PermuteOp(FgOp):
    """`fg.permute {perm = array<i64: 1, 0>}`: result dim i is input dim perm[i]."""

    name = "fg.permute"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: Operand, *, perm: Sequence[int]) -> None:
        props = {"perm": DenseArrayBase.from_list(i64, perm)}
        super().__init__([input], props, rule=partial(self.rule, perm=perm))

    @property
    def permutation(self) -> tuple[int, ...]:
        """The permutation as ints."""
        return tuple(self.perm.get_values())

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, perm=self.permutation)

    @staticmethod
    def rule(x: Attribute, *, perm: Sequence[int]) -> list[Attribute]:
        """The shape rule: `perm` is a permutation of x's dims; result dim i is x dim perm[i]."""
        x = expect_tensor("fg.permute", "input", x)
        if sorted(perm) != list(range(x.rank)):
            raise ValueError(f"fg.permute: perm {list(perm)} is not a permutation of 0..{x.rank - 1}")
        return [TensorType(x.dtype, [x.shape[p] for p in perm], x.device)]


def permute(x: TensorValue, perm: Sequence[int]) -> TensorValue:
    """Reorder the dims of `x`: result dim i is input dim `perm[i]`."""
    perm = [normalize_axis("fg.permute", p, x.rank) for p in perm] if x.rank else list(perm)
    return emit_tensor(PermuteOp(x, perm=perm))


def transpose(x: TensorValue, dim0: int, dim1: int) -> TensorValue:
    """Swap two dims of `x` (a `fg.permute`)."""
    a, b = normalize_axis("fg.permute", dim0, x.rank), normalize_axis("fg.permute", dim1, x.rank)
    perm = list(range(x.rank))
    perm[a], perm[b] = perm[b], perm[a]
    return permute(x, perm)


@torch_impl(PermuteOp)
def _permute_torch(op: PermuteOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    return x.permute(op.permutation)


# --- concat ---------------------------------------------------------------------------
@register_op
@irdl_op_definition
class ConcatOp(FgOp):
    """`fg.concat {axis = 1}`: join tensors along `axis`."""

    name = "fg.concat"
    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($result)"

    def __init__(self, inputs: Sequence[Operand], *, axis: int) -> None:
        super().__init__([inputs], {"axis": IntegerAttr(axis, i64)}, rule=partial(self.rule, axis=axis))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule([v.type for v in self.inputs], axis=self.axis.value.data)

    @staticmethod
    def rule(types: list[Attribute], *, axis: int) -> list[Attribute]:
        """The shape rule: equal dtypes, devices and ranks; every dim but `axis` agrees."""
        if not types:
            raise ValueError("fg.concat: needs at least one input")
        first = expect_tensor("fg.concat", "input 0", types[0])
        axis = normalize_axis("fg.concat", axis, first.rank)
        total = Dim(0)
        for i, t in enumerate(types):
            t = expect_tensor("fg.concat", f"input {i}", t)
            expect_same_device("fg.concat", **{"input 0": first, f"input {i}": t})
            if t.dtype != first.dtype:
                raise ValueError(
                    f"fg.concat: input {i} dtype {t.dtype.name} != input 0 dtype {first.dtype.name}"
                )
            if t.rank != first.rank:
                raise ValueError(f"fg.concat: input {i} rank {t.rank} != input 0 rank {first.rank}")
            for d, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)):
                if d != axis and a != b:
                    raise ValueError(f"fg.concat: input {i} dim {d} ({a}) != input 0 dim {d} ({b})")
            total = total + t.shape[axis]
        return [TensorType(first.dtype, [*first.shape[:axis], total, *first.shape[axis + 1 :]], first.device)]


def concat(values: Sequence[TensorValue], axis: int = 0) -> TensorValue:
    """Concatenate `values` along `axis`; all other dims, dtypes and devices must agree."""
    return emit_tensor(ConcatOp(list(values), axis=axis))


@torch_impl(ConcatOp)
def _concat_torch(op: ConcatOp, *xs: torch.Tensor, ctx: LoweringContext) -> torch.Tensor:
    return torch.cat(list(xs), dim=op.axis.value.data)


# --- split ----------------------------------------------------------------------------
@register_op
@irdl_op_definition
class SplitOp(FgOp):
    """`fg.split {axis = 1}`: cut a tensor into consecutive pieces (sizes from the result types)."""

    name = "fg.split"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    outputs = var_result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($outputs)"

    def __init__(self, input: Operand, *, sizes: Sequence[DimLike], axis: int) -> None:
        props = {"axis": IntegerAttr(axis, i64)}
        super().__init__([input], props, rule=partial(self.rule, sizes=sizes, axis=axis))

    @property
    def sizes(self) -> list[Dim]:
        """The size of each piece along the axis."""
        axis = normalize_axis(
            self.name, self.axis.value.data, expect_tensor(self.name, "input", self.input.type).rank
        )
        return [r.type.shape[axis] for r in self.outputs]

    def infer_types(self) -> Sequence[Sequence[Attribute]]:
        return self.rule(self.input.type, sizes=self.sizes, axis=self.axis.value.data)

    @staticmethod
    def rule(x: Attribute, *, sizes: Sequence[DimLike], axis: int) -> list[list[Attribute]]:
        """The shape rule: one result per size (a variadic result); the sizes sum to x's `axis` dim."""
        x = expect_tensor("fg.split", "input", x)
        axis = normalize_axis("fg.split", axis, x.rank)
        total = sum((Dim(s) for s in sizes), Dim(0))
        if total != x.shape[axis]:
            raise ValueError(
                f"fg.split: sizes {[str(Dim(s)) for s in sizes]} sum to {total}, "
                f"but input dim {axis} is {x.shape[axis]}"
            )
        return [
            [TensorType(x.dtype, [*x.shape[:axis], Dim(s), *x.shape[axis + 1 :]], x.device) for s in sizes]
        ]


def split(x: TensorValue, sizes: Sequence[DimLike], axis: int = 0) -> list[TensorValue]:
    """Split `x` along `axis` into pieces of `sizes`, which must sum to the dim.

    Example:
        >>> q, k, v = ops.split(qkv, [64, 32, 32], axis=1)
    """
    return [TensorValue(r) for r in emit(SplitOp(x, sizes=sizes, axis=axis)).results]


@torch_impl(SplitOp)
def _split_torch(op: SplitOp, x: torch.Tensor, *, ctx: LoweringContext) -> tuple[torch.Tensor, ...]:
    axis = normalize_axis(op.name, op.axis.value.data, x.dim())
    return tuple(torch.split(x, [ctx.size(s) for s in op.sizes], dim=axis))
