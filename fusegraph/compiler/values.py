"""Python handles on SSA values: `TensorValue` (with operators) and `BufferValue`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xdsl.ir import SSAValue

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dims import Dim, DimLike
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import BufferType, TensorType

if TYPE_CHECKING:
    from fusegraph.compiler.graph import Graph


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
    def type(self) -> Any:
        """The value's fg type."""
        return self.ssa.type

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

    def __add__(self, other: Any) -> TensorValue:
        return _ops().add(self, other)

    def __radd__(self, other: Any) -> TensorValue:
        return _ops().add(other, self)

    def __sub__(self, other: Any) -> TensorValue:
        return _ops().sub(self, other)

    def __rsub__(self, other: Any) -> TensorValue:
        return _ops().sub(other, self)

    def __mul__(self, other: Any) -> TensorValue:
        return _ops().mul(self, other)

    def __rmul__(self, other: Any) -> TensorValue:
        return _ops().mul(other, self)

    def __truediv__(self, other: Any) -> TensorValue:
        return _ops().div(self, other)

    def __rtruediv__(self, other: Any) -> TensorValue:
        return _ops().div(other, self)

    def __neg__(self) -> TensorValue:
        return _ops().neg(self)

    def __matmul__(self, other: TensorValue) -> TensorValue:
        return _ops().matmul(self, other)

    @property
    def T(self) -> TensorValue:  # noqa: N802 - numpy's spelling
        """Swap the last two dims."""
        return _ops().transpose(self, -2, -1)

    def reshape(self, shape: list[DimLike]) -> TensorValue:
        """Reshape; one dim may be -1 and is inferred."""
        return _ops().reshape(self, shape)

    def cast(self, dtype: DType) -> TensorValue:
        """Convert the element type."""
        return _ops().cast(self, dtype)

    def permute(self, perm: list[int]) -> TensorValue:
        """Reorder the dims."""
        return _ops().permute(self, perm)

    def __getitem__(self, index: Any) -> TensorValue:
        return _ops().slice_tensor(self, index)

    @property
    def graph(self) -> Graph:
        """The graph being built."""
        from fusegraph.compiler.graph import Graph

        return Graph.current()


def _ops() -> Any:
    import fusegraph.ops as ops

    return ops
