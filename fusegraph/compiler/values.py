"""Python handles on SSA values: `TensorValue` (with operators) and `BufferValue`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import EllipsisType
from typing import Protocol, TypeAlias, cast

from xdsl.ir import SSAValue

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dims import Dim, DimLike
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import BufferType, TensorType

TensorOrScalar: TypeAlias = "TensorValue | float"
"""An elementwise operand: a tensor, or a Python scalar (an int too) that becomes a constant."""
IndexItem: TypeAlias = int | slice | EllipsisType
Index: TypeAlias = IndexItem | tuple[IndexItem, ...]
"""A `TensorValue[...]` index: an int, a slice (step > 0), one `...`, or a tuple of them."""


class Value:
    """A graph value: a wrapper around an xDSL SSAValue of an fg type."""

    __slots__ = ("ssa",)

    def __init__(self, ssa: SSAValue) -> None:
        self.ssa = ssa

    @staticmethod
    def wrap(ssa: SSAValue) -> Value:
        """A TensorValue or BufferValue, according to the value's type."""
        if isinstance(ssa.type, BufferType):
            return BufferValue(ssa)
        if isinstance(ssa.type, TensorType):
            return TensorValue(ssa)
        raise TypeError(f"not an fg value: {ssa.type}")

    @property
    def type(self) -> TensorType | BufferType:
        """The value's fg type."""
        return cast(TensorType | BufferType, self.ssa.type)

    @property
    def shape(self) -> tuple[Dim, ...]:
        """The dims."""
        return self.type.shape

    @property
    def dtype(self) -> DType:
        """The element type."""
        return self.type.dtype

    @property
    def device(self) -> DeviceRef:
        """Where the value lives."""
        return self.type.device

    @property
    def rank(self) -> int:
        """The number of dims."""
        return len(self.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Value) and other.ssa is self.ssa

    def __hash__(self) -> int:
        return id(self.ssa)


class BufferValue(Value):
    """A version of a mutable buffer (`!fg.buffer`). Ops that write it return the next."""

    __slots__ = ()


class TensorValue(Value):
    """A tensor in a graph. Operators build ops in the current graph.

    Example:
        >>> with Graph("g", input_types=[TensorType(DType.float32, ["n", 4])]) as g:
        ...     (x,) = g.inputs
        ...     y = (x * x).reshape([-1]) + 1.0
    """

    __slots__ = ()

    @property
    def type(self) -> TensorType:
        """The value's tensor type."""
        return cast(TensorType, self.ssa.type)

    def __add__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().add(self, other)

    def __radd__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().add(other, self)

    def __sub__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().sub(self, other)

    def __rsub__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().sub(other, self)

    def __mul__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().mul(self, other)

    def __rmul__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().mul(other, self)

    def __truediv__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().div(self, other)

    def __rtruediv__(self, other: TensorOrScalar) -> TensorValue:
        return tensor_ops().div(other, self)

    def __neg__(self) -> TensorValue:
        return tensor_ops().neg(self)

    def __matmul__(self, other: TensorValue) -> TensorValue:
        return tensor_ops().matmul(self, other)

    @property
    def T(self) -> TensorValue:  # noqa: N802 - numpy's spelling
        """Swap the last two dims."""
        return tensor_ops().transpose(self, -2, -1)

    def reshape(self, shape: Sequence[DimLike]) -> TensorValue:
        """Reshape; one dim may be -1 and is inferred."""
        return tensor_ops().reshape(self, shape)

    def cast(self, dtype: DType) -> TensorValue:
        """Convert the element type."""
        return tensor_ops().cast(self, dtype)

    def permute(self, perm: Sequence[int]) -> TensorValue:
        """Reorder the dims."""
        return tensor_ops().permute(self, perm)

    def __getitem__(self, index: Index) -> TensorValue:
        return tensor_ops().slice_tensor(self, index)


class TensorOps(Protocol):
    """The builders behind TensorValue's operators. `fusegraph.ops` installs itself here when
    it is imported (`install_tensor_ops`), so the IR core never imports the op families."""

    def add(self, lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue: ...
    def sub(self, lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue: ...
    def mul(self, lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue: ...
    def div(self, lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue: ...
    def neg(self, x: TensorValue) -> TensorValue: ...
    def matmul(self, lhs: TensorValue, rhs: TensorValue) -> TensorValue: ...
    def transpose(self, x: TensorValue, dim0: int, dim1: int) -> TensorValue: ...
    def reshape(self, x: TensorValue, shape: Sequence[DimLike]) -> TensorValue: ...
    def cast(self, x: TensorValue, dtype: DType) -> TensorValue: ...
    def permute(self, x: TensorValue, perm: Sequence[int]) -> TensorValue: ...
    def slice_tensor(self, x: TensorValue, index: Index) -> TensorValue: ...


_TENSOR_OPS: list[TensorOps] = []


def install_tensor_ops(ops: TensorOps) -> None:
    """Make `ops` the builders of TensorValue's operators (`fusegraph.ops` calls this)."""
    _TENSOR_OPS[:] = [ops]


def tensor_ops() -> TensorOps:
    """The installed operator builders. A program that built graph values without importing
    `fusegraph.ops` gets it loaded by name here, as a plugin (xDSL loads dialects the same way)."""
    if not _TENSOR_OPS:
        importlib.import_module("fusegraph.ops")
    return _TENSOR_OPS[0]
