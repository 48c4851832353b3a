"""The op families. Importing this package registers every op in the `fg` dialect."""

from fusegraph.ops import weight  # noqa: F401 - registers fg.weight
from fusegraph.ops.elementwise import (
    add,
    cast,
    clamp,
    constant,
    div,
    exp,
    mul,
    neg,
    relu,
    rsqrt,
    silu,
    sub,
)
from fusegraph.ops.matmul import matmul
from fusegraph.ops.shape import concat, permute, reshape, split, transpose

__all__ = [
    "add",
    "cast",
    "clamp",
    "concat",
    "constant",
    "div",
    "exp",
    "matmul",
    "mul",
    "neg",
    "permute",
    "relu",
    "reshape",
    "rsqrt",
    "silu",
    "split",
    "sub",
    "transpose",
]
