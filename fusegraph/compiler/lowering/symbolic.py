"""Symbolic tracing for the lowerings: one FakeTensorMode over one ShapeEnv with a SymInt per
symbolic dim name (`fake_symbols`), the example sizes they trace at (`default_dim_hints`), and
`make_fx(tracing_mode="symbolic")` with torch-mlir's decomposition table, of a whole `to_fx`
module (`trace_symbolic`) or of one op's torch implementation (`trace_op`, what `to_aten_fx`
splices in).

Example:
    >>> fake_mode, symbols = fake_symbols(graph)     # {"total_seq_len": SymInt(5), ...}
    >>> gm = trace_symbolic(to_fx(graph), graph)     # core aten, symbolic dims dynamic
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from xdsl.ir import Operation

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.compiler.types import BufferType, TensorType, shaped_type

__all__ = [
    "decompositions",
    "default_dim_hints",
    "example_inputs",
    "fake_symbols",
    "fresh_fake",
    "same_size",
    "trace_op",
    "trace_symbolic",
]


def fresh_fake(fake_mode: FakeTensorMode, sizes: list[Any], dtype: torch.dtype) -> FakeTensor:
    """A contiguous CPU FakeTensor: wrapping a meta tensor is ~3x cheaper than dispatching
    `torch.empty` under the fake mode (the same construction FakeTensorMode does)."""
    meta = torch.empty(sizes, dtype=dtype, device="meta")
    try:
        return FakeTensor(fake_mode, meta, torch.device("cpu"))
    except TypeError:  # a torch whose FakeTensor constructor differs
        with fake_mode:
            return torch.empty(sizes, dtype=dtype)  # type: ignore[return-value]


def same_size(got: int | torch.SymInt, want: int | torch.SymInt) -> bool:
    """Whether two sizes (ints or SymInts of one ShapeEnv) are the same expression."""
    if isinstance(got, int) or isinstance(want, int):
        return isinstance(got, int) and isinstance(want, int) and got == want
    return bool((got.node.expr - want.node.expr).expand() == 0)


def fake_symbols(
    graph: Graph, dim_hints: Mapping[str, int] | None = None
) -> tuple[FakeTensorMode, dict[str, torch.SymInt]]:
    """One FakeTensorMode over one ShapeEnv, and one SymInt per symbolic dim name of the
    graph's inputs and weights (hinted by `dim_hints`, else `default_dim_hints`)."""
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    hints = default_dim_hints(graph) | dict(dim_hints or {})
    env = ShapeEnv()
    symbols: dict[str, torch.SymInt] = {}
    for name, hint in hints.items():
        expr = env.create_symbol(
            hint, ConstantSource(name), dynamic_dim=DimDynamic.DYNAMIC, do_not_specialize_zero_one=True
        )
        symbols[name] = env.create_symintnode(expr, hint=hint)  # type: ignore[assignment]
    return FakeTensorMode(shape_env=env), symbols


def default_dim_hints(graph: Graph) -> dict[str, int]:
    """Distinct example sizes (from 5 up) for the symbolic dims of the inputs and weights;
    a name `x_plus_1` gets `x`'s size + 1 when `x` is also a dim."""
    types = [shaped_type(a) for a in graph.block.args] + list(graph.weights.values())
    names: list[str] = []
    for t in types:
        for d in t.shape:
            if d.is_algebraic:
                raise ValueError(f"to_torch_mlir: input/weight dim {d} must be static or symbolic")
            if d.is_symbolic and d.name not in names:
                names.append(d.name)
    hints = {name: 5 + 2 * i for i, name in enumerate(names)}
    for name in names:
        if (base := name.removesuffix("_plus_1")) != name and base in hints:
            hints[name] = hints[base] + 1
    return hints


def example_inputs(graph: Graph, dim_hints: Mapping[str, int] | None = None) -> list[FakeTensor]:
    """Fake CPU tensors for the FX placeholders (graph inputs, then weights): each symbolic
    dim name is one SymInt shared by every tensor that uses it; static dims stay ints."""
    fake_mode, symbols = fake_symbols(graph, dim_hints)
    types = [shaped_type(a) for a in graph.block.args] + list(graph.weights.values())
    return [
        fresh_fake(
            fake_mode, [d.value if d.is_static else symbols[d.name] for d in t.shape], t.dtype.to_torch()
        )
        for t in types
    ]


@functools.cache
def decompositions() -> dict[Any, Any]:
    """torch-mlir's decomposition table (what its FX importer expects to see)."""
    from torch_mlir.extras.fx_decomp_util import get_decomposition_table

    return dict(get_decomposition_table())


def trace_symbolic(
    gm: torch.fx.GraphModule, graph: Graph, dim_hints: Mapping[str, int] | None = None
) -> torch.fx.GraphModule:
    """`make_fx` of `gm` on `example_inputs(graph)` with torch-mlir's decomposition table."""
    from torch.fx.experimental.proxy_tensor import make_fx

    inputs = example_inputs(graph, dim_hints)
    return make_fx(gm, tracing_mode="symbolic", decomposition_table=decompositions())(*inputs)


def trace_op(
    op: Operation,
    operands: Sequence[FakeTensor | None],
    dims: Mapping[str, torch.SymInt],
    fake_mode: FakeTensorMode,
    mode: str,
) -> torch.fx.GraphModule:
    """`make_fx` of `op`'s torch implementation alone (functional, in `mode`), on the fake
    `operands` (None for an absent optional operand) of `fake_mode`.

    The placeholders are the present operands, then one SymInt per name of `dims`: the impl's
    `ctx.size(dim)` reads those, so a size that is not one of the operands' (the pieces of a
    split, a gather's reshape) is a placeholder the caller binds to its own size node.
    """
    from torch._guards import TracingContext, tracing
    from torch.fx.experimental.proxy_tensor import make_fx

    impl, present = get_torch_impl(op), [t for t in operands if t is not None]
    names = list(dims)

    def run(*args: Any) -> Any:
        tensors, it = [], iter(args[: len(present)])
        for t in operands:
            tensors.append(None if t is None else next(it))
        ctx = LoweringContext(mode=mode, inplace=False, dims=dict(zip(names, args[len(present) :])))  # type: ignore[arg-type]
        return impl(op, *tensors, ctx=ctx)

    with tracing(TracingContext(fake_mode)):  # the values' mode, also for an op without operands
        gm = make_fx(run, tracing_mode="symbolic", decomposition_table=decompositions())(
            *present, *dims.values()
        )
    gm.graph.eliminate_dead_code()
    return gm


def op_dim_names(op: Operation) -> list[str]:
    """The dim names (sorted) that the operand and result types of `op` are written in."""
    names: set[str] = set()
    for value in (*op.operands, *op.results):
        if isinstance(t := value.type, (TensorType, BufferType)):
            for d in t.shape:
                if not d.is_static:
                    names.update(str(s) for s in d.expr.free_symbols)
    return sorted(names)
