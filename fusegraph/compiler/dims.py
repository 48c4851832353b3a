"""Tensor dimensions: static (`4096`), symbolic (`"total_seq_len"`) or algebraic
(`total_seq_len * 2`, from reshape arithmetic).

A symbolic name means the same size everywhere in a graph. Algebraic dims are kept in
sympy's canonical form, so `2*T` built two ways compares equal and prints the same.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Union

import sympy

DimLike = Union["Dim", int, str]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@functools.cache
def _symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, positive=True)


class Dim:
    """One dimension of a tensor shape.

    Example:
        >>> t = Dim("total_seq_len")
        >>> str(t * 32), (t * 32 // 32) == t, Dim(8).is_static
        ('32*total_seq_len', True, True)
    """

    __slots__ = ("expr", "_hash")

    def __init__(self, value: DimLike | sympy.Expr) -> None:
        if isinstance(value, Dim):
            expr = value.expr
        elif isinstance(value, bool):
            raise TypeError(f"Dim: expected int, str or Dim, got bool {value!r}")
        elif isinstance(value, int):
            if value < 0:
                raise ValueError(f"Dim: static dims must be >= 0, got {value}")
            expr = sympy.Integer(value)
        elif isinstance(value, str):
            if not _NAME.match(value):
                raise ValueError(f"Dim: symbolic name must be an identifier, got {value!r}")
            expr = _symbol(value)
        elif isinstance(value, sympy.Expr):
            expr = sympy.nsimplify(value) if value.is_Float else value
        else:
            raise TypeError(f"Dim: expected int, str or Dim, got {type(value).__name__}")
        self.expr: sympy.Expr = expr
        self._hash = hash(expr)

    # --- classification -------------------------------------------------------------
    @property
    def is_static(self) -> bool:
        """True when the size is a known integer."""
        return bool(self.expr.is_Integer)

    @property
    def is_symbolic(self) -> bool:
        """True for a plain named dim such as `total_seq_len`."""
        return bool(self.expr.is_Symbol)

    @property
    def is_algebraic(self) -> bool:
        """True for an expression over named dims, such as `2*total_seq_len`."""
        return not (self.is_static or self.is_symbolic)

    @property
    def value(self) -> int:
        """The integer size of a static dim; a ValueError otherwise."""
        if not self.is_static:
            raise ValueError(f"dim {self} is not static")
        return int(self.expr)

    @property
    def name(self) -> str:
        """The name of a symbolic dim; a ValueError otherwise."""
        if not self.is_symbolic:
            raise ValueError(f"dim {self} is not symbolic")
        return str(self.expr)

    @property
    def symbols(self) -> frozenset[str]:
        """The names this dim depends on."""
        return frozenset(str(s) for s in self.expr.free_symbols)

    # --- arithmetic -------------------------------------------------------------------
    def __add__(self, other: DimLike) -> Dim:
        return Dim(self.expr + Dim(other).expr)

    __radd__ = __add__

    def __sub__(self, other: DimLike) -> Dim:
        return Dim(self.expr - Dim(other).expr)

    def __mul__(self, other: DimLike) -> Dim:
        return Dim(self.expr * Dim(other).expr)

    __rmul__ = __mul__

    def __floordiv__(self, other: DimLike) -> Dim:
        """Exact division: only defined when the result is a whole dim."""
        divisor = Dim(other).expr
        quotient = sympy.simplify(self.expr / divisor)
        if quotient.is_integer is not True:
            raise ValueError(f"dim {self} is not divisible by {Dim(other)}")
        return Dim(quotient)

    # --- comparison and printing ------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, int) and not isinstance(other, bool):
            return bool(self.expr.is_Integer) and int(self.expr) == other
        if isinstance(other, str):
            other = Dim(other)
        if not isinstance(other, Dim):
            return NotImplemented
        a, b = self.expr, other.expr
        if a is b or a == b:
            return True
        if a.is_Integer or b.is_Integer or a.is_Symbol or b.is_Symbol:
            return False  # sympy's canonical forms make these structural comparisons exact
        return bool(sympy.expand(a - b) == 0)

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return str(self.expr)

    def __repr__(self) -> str:
        return f"Dim({int(self.expr) if self.is_static else str(self.expr)!r})"

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value


def dims_of(shape: Sequence[DimLike]) -> tuple[Dim, ...]:
    """Convert a list of ints, names and Dims to a tuple of Dims."""
    return tuple(Dim(d) for d in shape)


def product(dims: Sequence[Dim]) -> Dim:
    """The product of dims (1 for an empty shape)."""
    result = Dim(1)
    for d in dims:
        result = result * d
    return result


def dim_problem(expr: sympy.Expr) -> str | None:
    """Why `expr` cannot be a dim, or None when it can.

    A dim must be a whole number >= 0 for every (positive) value of its names: `3-11`,
    `8/0` and `1/2` are refused; `n-11` and `n/2` are kept, as sympy cannot refute them.

    Example:
        >>> dim_problem(sympy.Integer(3) - 11)
        'it evaluates to -8, below zero'
    """
    if expr.is_Symbol or (expr.is_Integer and expr >= 0):  # the common cases, fast
        return None
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return f"it evaluates to {expr} (a division by zero?)"
    if expr.is_integer is False:
        return f"it evaluates to {expr}, not a whole number"
    if expr.is_nonnegative is False:
        return f"it evaluates to {expr}, below zero"
    return None


def symbol_expr(name: str) -> sympy.Symbol:
    """The sympy symbol for a dim name (used by the parser)."""
    return _symbol(name)
