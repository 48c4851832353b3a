"""Helpers shared by the op families: operand checks and broadcasting."""

from __future__ import annotations

from collections.abc import Sequence

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import BufferType, TensorType, shape_str


def expect_tensor(op: str, operand: str, t: object) -> TensorType:
    """`t` as a TensorType, or a ValueError naming the op and operand."""
    if not isinstance(t, TensorType):
        raise ValueError(f"{op}: {operand} must be a !fg.tensor, got {t}")
    return t


def expect_buffer(op: str, operand: str, t: object) -> BufferType:
    """`t` as a BufferType, or a ValueError naming the op and operand."""
    if not isinstance(t, BufferType):
        raise ValueError(f"{op}: {operand} must be a !fg.buffer, got {t}")
    return t


def expect_rank(op: str, operand: str, t: TensorType | BufferType, rank: int) -> None:
    """A ValueError unless `t` has `rank` dims."""
    if t.rank != rank:
        raise ValueError(f"{op}: {operand} must have rank {rank}, got shape {shape_str(t.shape)}")


def expect_dtype(op: str, operand: str, t: TensorType | BufferType, allowed: Sequence[DType]) -> None:
    """A ValueError unless `t.dtype` is one of `allowed`."""
    if t.dtype not in allowed:
        names = ", ".join(d.name for d in allowed)
        raise ValueError(f"{op}: {operand} dtype must be one of {names}, got {t.dtype.name}")


def expect_same_device(op: str, **operands: TensorType | BufferType | None) -> None:
    """A ValueError naming both operands when they live on different devices."""
    present = [(name, t) for name, t in operands.items() if t is not None]
    first_name, first = present[0]
    for name, t in present[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{op}: operands on different devices: {first_name} on {first.device}, {name} on {t.device}"
            )


def expect_dim(op: str, what: str, got: Dim, want: Dim | int) -> None:
    """A ValueError `op: what (got) != want` when two dims disagree."""
    if got != Dim(want):
        raise ValueError(f"{op}: {what} ({got}) != {Dim(want)}")


def normalize_axis(op: str, axis: int, rank: int) -> int:
    """A non-negative axis, or a ValueError naming the allowed range."""
    if not -rank <= axis < rank:
        raise ValueError(f"{op}: axis {axis} out of range for rank {rank} (allowed {-rank}..{rank - 1})")
    return axis % rank


def broadcast_shapes(op: str, lhs: Sequence[Dim], rhs: Sequence[Dim]) -> tuple[Dim, ...]:
    """Numpy broadcasting, right-aligned; a ValueError names the dims that disagree."""
    rank = max(len(lhs), len(rhs))
    lhs_p = (Dim(1),) * (rank - len(lhs)) + tuple(lhs)
    rhs_p = (Dim(1),) * (rank - len(rhs)) + tuple(rhs)
    out = []
    for i, (a, b) in enumerate(zip(lhs_p, rhs_p, strict=True)):
        if a == b or b == 1:
            out.append(a)
        elif a == 1:
            out.append(b)
        else:
            raise ValueError(f"{op}: lhs dim {i} ({a}) and rhs dim {i} ({b}) cannot broadcast")
    return tuple(out)
