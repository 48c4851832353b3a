"""Per-op torch implementations: each op's torch code is its one statement of the op's math,
both its eager kernel and its lowering (`to_fx` calls it; `to_aten_fx` derives the op's
core-aten nodes from it; see `compiler/lowering/fx_direct.py`).

An op family file registers its implementation next to its op class:

    @torch_impl(AddOp)
    def _add_torch(op: AddOp, lhs: Tensor, rhs: Tensor, *, ctx: LoweringContext) -> Tensor:
        return lhs + rhs

The function receives the op (for its properties and result types), the operand tensors
in operand order (`None` for an absent optional operand), and the lowering context. It
returns one tensor, or a tuple with one tensor per result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from xdsl.ir import Operation

from fusegraph.compiler.dims import Dim

if TYPE_CHECKING:
    import torch

TorchImpl = Callable[..., Any]

_TORCH_IMPLS: dict[type[Operation], TorchImpl] = {}


@dataclass
class LoweringContext:
    """What an op's torch implementation needs to know besides its operands.

    Attributes:
        mode: "custom" calls the fused and quantized ops as `torch.ops.fusegraph.*`;
            "decomposed" expands them to aten ops (what IREE can compile).
        inplace: write buffers in place (the eager runtime) rather than returning a new
            version (the functional form that torch-mlir imports).
        dims: the runtime size of each symbolic dim: an int (a SymInt while tracing, as
            torch's own `Tensor.size` is typed).
        device: the torch device string that tensors are created on.
    """

    mode: Literal["custom", "decomposed"] = "custom"
    inplace: bool = False
    dims: Mapping[str, int | torch.SymInt] = field(default_factory=dict)
    device: str = "cpu"

    def size(self, dim: Dim) -> int:
        """The runtime size of `dim`, evaluated from the symbolic dims seen so far."""
        return evaluate_dim(dim, self.dims)

    def sizes(self, shape: tuple[Dim, ...]) -> list[int]:
        """`size` of each dim of a shape."""
        return [self.size(d) for d in shape]


def evaluate_dim(dim: Dim, env: Mapping[str, int | torch.SymInt]) -> int:
    """Evaluate a dim with plain Python arithmetic, so that SymInts flow through (typed `int`,
    as torch types sizes)."""
    import sympy

    def walk(e: sympy.Expr) -> Any:
        if e.is_Integer:
            return int(e)
        if e.is_Symbol:
            if (name := str(e)) not in env:
                raise ValueError(f"dim {dim}: no runtime size bound for {name!r}")
            return env[name]
        if e.is_Rational:
            raise ValueError(f"dim {dim}: fractional coefficient {e}")
        if e.is_Add:
            args = [walk(a) for a in e.args]
            total = args[0]
            for a in args[1:]:
                total = total + a
            return total
        if e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            value = walk(rest)
            if coeff.is_Integer:
                return value * int(coeff) if coeff != 1 else value
            return value * int(coeff.p) // int(coeff.q)
        if e.is_Pow and e.exp.is_Integer and e.exp > 0:
            base = walk(e.base)
            result = base
            for _ in range(int(e.exp) - 1):
                result = result * base
            return result
        raise ValueError(f"dim {dim}: cannot evaluate {e}")

    return cast(int, walk(dim.expr))


def torch_impl(op_cls: type[Operation]) -> Callable[[TorchImpl], TorchImpl]:
    """Register `fn` as the torch implementation of `op_cls`."""

    def register(fn: TorchImpl) -> TorchImpl:
        _TORCH_IMPLS[op_cls] = fn
        return fn

    return register


class MissingTorchImplError(LookupError):
    """An op reached the eager runtime or the lowering without a registered torch implementation."""


def get_torch_impl(op: Operation) -> TorchImpl:
    """The torch implementation of `op`.

    Raises:
        MissingTorchImplError: none is registered for the op's class; the message says how to
            register one.
    """
    if (fn := _TORCH_IMPLS.get(type(op))) is None:
        cls = type(op).__name__
        raise MissingTorchImplError(
            f"{op.name}: no torch implementation registered for {cls}; "
            f"register one with @torch_impl({cls}) (fusegraph.compiler.impls)"
        )
    return fn
