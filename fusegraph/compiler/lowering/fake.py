"""Fake-tensor metadata for the lowerings: one FakeTensorMode over one ShapeEnv with a SymInt
per symbolic dim name (`fake_symbols`), the example sizes they trace at (`default_dim_hints`),
and cheap FakeTensor construction for emitted nodes.

Example:
    >>> fake_mode, symbols = fake_symbols(graph)     # {"total_seq_len": SymInt(5), ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.types import shaped_type

__all__ = ["default_dim_hints", "fake_symbols", "fresh_fake", "same_size", "wrap_meta"]


def wrap_meta(fake_mode: Any, meta: torch.Tensor, sizes: list[Any], dtype: torch.dtype) -> Any:
    """A CPU FakeTensor around a meta tensor (falls back to an empty one of `sizes`)."""
    from torch._subclasses.fake_tensor import FakeTensor

    try:
        return FakeTensor(fake_mode, meta, torch.device("cpu"))
    except TypeError:  # a torch whose FakeTensor constructor differs
        with fake_mode:
            return torch.empty(sizes, dtype=dtype)


def fresh_fake(fake_mode: Any, sizes: list[Any], dtype: torch.dtype) -> Any:
    """A contiguous CPU FakeTensor: wrapping a meta tensor is ~3x cheaper than dispatching
    `torch.empty` under the fake mode (the same construction FakeTensorMode does)."""
    return wrap_meta(fake_mode, torch.empty(sizes, dtype=dtype, device="meta"), sizes, dtype)


def same_size(got: Any, want: Any) -> bool:
    if isinstance(got, int) or isinstance(want, int):
        return isinstance(got, int) and isinstance(want, int) and got == want
    return bool((got.node.expr - want.node.expr).expand() == 0)


def fake_symbols(graph: Graph, dim_hints: Mapping[str, int] | None = None) -> tuple[Any, dict[str, Any]]:
    """One FakeTensorMode over one ShapeEnv, and one SymInt per symbolic dim name of the
    graph's inputs and weights (hinted by `dim_hints`, else `default_dim_hints`)."""
    from torch._dynamo.source import ConstantSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    hints = default_dim_hints(graph) | dict(dim_hints or {})
    env = ShapeEnv()
    symbols: dict[str, Any] = {}
    for name, hint in hints.items():
        expr = env.create_symbol(
            hint, ConstantSource(name), dynamic_dim=DimDynamic.DYNAMIC, do_not_specialize_zero_one=True
        )
        symbols[name] = env.create_symintnode(expr, hint=hint)
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
