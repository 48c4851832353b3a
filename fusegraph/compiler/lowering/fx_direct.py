"""Lowering to core-aten FX without tracing: each fg op emits its aten (or
`torch.ops.fusegraph.*`) call nodes directly, with fake-tensor metadata.

`make_fx` of `to_fx`'s module costs about 1.7 ms per op (proxy and fake-tensor dispatch
through the whole torch implementation). Here each emitted node costs one fake-tensor
dispatch of one aten op, which is what torch-mlir's `FxImporter` needs: `node.meta["val"]`
is a FakeTensor from one `FakeTensorMode(shape_env=ShapeEnv())`, symbolic dims are SymInts
(one symbol per dim name), and sizes an op needs are `aten.sym_size.int` nodes (plus
`operator` arithmetic nodes for algebraic dims).

Emitters are registered per op class with `@fx_emitter(OpCls)` (`compiler/impls.py`),
next to the op's `@torch_impl`. An emitter is `fn(e: Emitter, op, *operand_nodes)` and must
emit what `make_fx` of the torch impl would (modulo the spelling of views). A graph with an
op that has no emitter (or whose emitter raises `EmitUnsupportedError`, or whose result type
disagrees with the IR) is lowered by the tracing path instead, and the reason is logged.

Example:
    >>> gm = to_aten_fx(graph)                  # mode="custom"
    >>> gm.meta["fusegraph_lowering"]           # "direct" (or "traced" after a fallback)
    >>> outputs = gm(*inputs, *weights)         # runs on real tensors, too
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.fx
from torch.fx.node import map_aggregate
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import EmitUnsupportedError, evaluate_dim, get_fx_emitter
from fusegraph.compiler.lowering.fake import fake_symbols, fresh_fake, same_size, wrap_meta
from fusegraph.compiler.lowering.fx import _class_name, _FxBuilder, _safe_name, _unique
from fusegraph.compiler.types import BufferType, TensorType, shaped_type
from fusegraph.compiler.weight import WeightOp

logger = logging.getLogger(__name__)
aten = torch.ops.aten


class _Sym:
    """A symbolic size while emitting: its FX node and its SymInt. Python arithmetic on it
    (what `evaluate_dim` does for algebraic dims) emits `operator.*` nodes."""

    def __init__(self, e: Emitter, node: torch.fx.Node) -> None:
        self.e, self.node = e, node

    def _op(self, fn: Any, lhs: Any, rhs: Any) -> _Sym:
        return _Sym(self.e, self.e.call(fn, lhs, rhs))

    def __add__(self, other: Any) -> _Sym:
        return self._op(operator.add, self, other)

    def __radd__(self, other: Any) -> _Sym:
        return self._op(operator.add, other, self)

    def __sub__(self, other: Any) -> _Sym:
        return self._op(operator.sub, self, other)

    def __mul__(self, other: Any) -> _Sym:
        return self._op(operator.mul, self, other)

    def __rmul__(self, other: Any) -> _Sym:
        return self._op(operator.mul, other, self)

    def __floordiv__(self, other: Any) -> _Sym:
        return self._op(operator.floordiv, self, other)


def _as_node(x: Any) -> Any:
    return x.node if isinstance(x, _Sym) else x


def _as_val(x: Any) -> Any:
    if isinstance(x, _Sym):
        return x.node.meta["val"]
    return x.meta["val"] if isinstance(x, torch.fx.Node) else x


class Emitter:
    """What an `@fx_emitter` function uses to append nodes.

    Attributes:
        mode: the lowering mode ("custom").
        fake_mode: the FakeTensorMode every `meta["val"]` belongs to.
    """

    def __init__(
        self, fx: torch.fx.Graph, root: torch.nn.Module, fake_mode: Any, symbols: Any, mode: str
    ) -> None:
        self.fx, self.root, self.fake_mode, self.mode = fx, root, fake_mode, mode
        self.symbols: dict[str, Any] = symbols
        self._dim_sources: dict[str, tuple[torch.fx.Node, int]] = {}
        self._dims: dict[str, _Sym] = {}
        self._constants = 0
        self._fresh_vals: dict[tuple[tuple[str, ...], torch.dtype], Any] = {}

    def call(self, target: Any, *args: Any, **kwargs: Any) -> torch.fx.Node:
        """Append `target(*args, **kwargs)`; its `meta["val"]` is computed on the fake
        values of the argument nodes (so a wrong emitter fails here, not in MLIR)."""
        fake_args = map_aggregate(args, _as_val)
        fake_kwargs = map_aggregate(kwargs, _as_val)
        with self.fake_mode:
            val = target(*fake_args, **fake_kwargs)
        return self._node(target, args, kwargs, val)

    def _node(self, target: Any, args: Any, kwargs: Any, val: Any) -> torch.fx.Node:
        node_args = cast(tuple[Any, ...], map_aggregate(args, _as_node))
        node_kwargs = cast(dict[str, Any], map_aggregate(kwargs, _as_node))
        node = self.fx.create_node("call_function", target, node_args, node_kwargs)
        node.meta["val"] = val
        return node

    def custom(
        self, op_name: str, overload: Any, *args: Any, results: Any = None, **kwargs: Any
    ) -> torch.fx.Node:
        """A functional `torch.ops.fusegraph*` call, with its arguments made positional in
        schema order (as make_fx records them). Only in mode "custom". With `results` (the
        op's IR result types), the fake values are built from them instead of dispatching
        the op's fake implementation (about 1 ms a call)."""
        if self.mode != "custom":
            raise EmitUnsupportedError(f"{op_name} is emitted only in mode 'custom', not {self.mode!r}")
        schema_args = overload._schema.arguments  # noqa: SLF001
        positional = list(args)
        for arg in schema_args[len(args) :]:
            if arg.name in kwargs:
                positional.append(kwargs.pop(arg.name))
            elif arg.has_default_value():
                positional.append(arg.default_value)
            else:
                raise EmitUnsupportedError(f"{op_name}: no value for argument {arg.name!r} of {overload}")
        if kwargs:
            raise EmitUnsupportedError(f"{op_name}: {overload} has no arguments {sorted(kwargs)}")
        if results is None:
            return self.call(overload, *positional)
        # A custom op returns fresh contiguous tensors of the IR's result types (its
        # register_fake says so, and opcheck tests it): build them without a dispatch.
        vals = [self.fresh(t) for t in results]
        returns = overload._schema.returns  # noqa: SLF001
        if len(returns) == 1 and isinstance(returns[0].type, torch.ListType):
            val: Any = vals  # Tensor[]
        elif len(returns) == len(vals):
            val = vals[0] if len(vals) == 1 else tuple(vals)
        else:
            raise EmitUnsupportedError(
                f"{op_name}: {overload} returns {len(returns)} values, IR has {len(vals)}"
            )
        return self._node(overload, tuple(positional), {}, val)

    def call_fresh(self, target: Any, *args: Any, sizes: Sequence[Any], dtype: torch.dtype) -> torch.fx.Node:
        """Append `target(*args)` for an op that returns a new contiguous tensor of `sizes`
        (ints or the SymInts of other values) and `dtype`, without a fake dispatch (about
        1 ms each on symbolic shapes): elementwise ops and reductions whose result the
        emitter knows."""
        return self._node(target, args, {}, self._fresh_cached(list(sizes), dtype))

    def call_views(
        self, target: Any, *args: Any, results: Sequence[TensorType], strides: Sequence[Any]
    ) -> torch.fx.Node:
        """Append `target(*args)` returning a list of views of one tensor with its `strides`
        (`split_with_sizes`), their fakes built from the IR `results` types without a fake
        dispatch (whose symbolic size checks cost ~5 ms a call)."""
        vals = []
        for t in results:
            sizes = [d.value if d.is_static else evaluate_dim(d, self.symbols) for d in t.shape]
            meta = torch.empty_strided(sizes, list(strides), dtype=t.dtype.to_torch(), device="meta")
            vals.append(wrap_meta(self.fake_mode, meta, sizes, t.dtype.to_torch()))
        return self._node(target, args, {}, vals)

    def _fresh_cached(self, sizes: list[Any], dtype: torch.dtype) -> Any:
        # One FakeTensor per (sizes, dtype): building one computes symbolic strides through
        # the ShapeEnv (~0.3 ms, growing with the graph); values are only read for their
        # shape and dtype, so nodes of equal type may share one.
        key = (tuple(str(s) for s in sizes), dtype)
        if (cached := self._fresh_vals.get(key)) is None:
            cached = self._fresh_vals[key] = fresh_fake(self.fake_mode, sizes, dtype)
        return cached

    def fresh(self, t: TensorType | BufferType) -> Any:
        """A new contiguous FakeTensor of IR type `t` (SymInt sizes for non-static dims)."""
        sizes = [d.value if d.is_static else evaluate_dim(d, self.symbols) for d in t.shape]
        return self._fresh_cached(sizes, t.dtype.to_torch())

    def unpack(self, node: torch.fx.Node, count: int) -> tuple[torch.fx.Node, ...]:
        """`getitem` nodes for the first `count` results of a multi-result node."""
        items = []
        for i in range(count):
            item = self.fx.call_function(operator.getitem, (node, i))
            item.meta["val"] = node.meta["val"][i]
            items.append(item)
        return tuple(items)

    def val(self, node: torch.fx.Node) -> Any:
        """The FakeTensor (or SymInt) a node computes."""
        return node.meta["val"]

    def size(self, dim: Dim) -> Any:
        """`dim` as an int, or as a size node (`aten.sym_size.int`, plus arithmetic)."""
        if dim.is_static:
            return dim.value
        return _as_node(evaluate_dim(dim, _LazyDims(self)))

    def view_sizes(self, shape: tuple[Dim, ...]) -> list[Any]:
        """Sizes for `aten.view`: with exactly one dynamic dim, that dim is -1 (no size
        nodes, as the torch impl's reshape does); otherwise every dim via `size`."""
        dynamic = [i for i, d in enumerate(shape) if not d.is_static]
        if len(dynamic) == 1:
            return [-1 if i == dynamic[0] else d.value for i, d in enumerate(shape)]
        return [self.size(d) for d in shape]

    def reshape(self, x: torch.fx.Node, result: TensorType) -> torch.fx.Node:
        """`x.reshape` to the IR type `result` (see `view`)."""
        return self.view(x, self.view_sizes(result.shape), result)

    def view(self, x: torch.fx.Node, sizes: list[Any], result: TensorType | None = None) -> torch.fx.Node:
        """`aten.view` when the strides allow it, else `clone` + `view` (core-aten reshape).
        With `result` (the IR type) a view of a contiguous tensor skips the fake dispatch."""
        if result is not None and self.val(x).is_contiguous():
            return self._node(aten.view.default, (x, sizes), {}, self.fresh(result))
        try:
            return self.call(aten.view.default, x, sizes)
        except (RuntimeError, ValueError):  # fake view rejects incompatible strides
            copy = self.call(aten.clone.default, x, memory_format=torch.contiguous_format)
            return self.call(aten.view.default, copy, sizes)

    def convert(self, x: torch.fx.Node, dtype: torch.dtype) -> torch.fx.Node:
        """`prims.convert_element_type` unless `x` already has `dtype` (as `.to` traces)."""
        if self.val(x).dtype == dtype:
            return x
        return self.call(torch.ops.prims.convert_element_type.default, x, dtype)

    def constant(self, value: torch.Tensor) -> torch.fx.Node:
        """A module constant (`get_attr`, then `clone` as make_fx lifts it)."""
        name = f"_tensor_constant{self._constants}"
        self._constants += 1
        self.root.register_buffer(name, value)
        node = self.fx.get_attr(name)
        node.meta["val"] = self.fake_mode.from_tensor(value)
        return self.call(aten.clone.default, node)

    def _symbol(self, name: str) -> _Sym:
        """One `aten.sym_size.int` node per dim name, emitted at its first use."""
        if name not in self._dims:
            source, axis = self._dim_sources[name]
            self._dims[name] = _Sym(self, self.call(aten.sym_size.int, source, axis))
        return self._dims[name]


class _LazyDims(Mapping[str, Any]):
    """The `evaluate_dim` environment: a name's size node is created only when read."""

    def __init__(self, e: Emitter) -> None:
        self.e = e

    def __getitem__(self, name: str) -> _Sym:
        return self.e._symbol(name)  # noqa: SLF001

    def __contains__(self, name: object) -> bool:
        return name in self.e._dim_sources  # noqa: SLF001

    def __iter__(self) -> Any:
        return iter(self.e._dim_sources)  # noqa: SLF001

    def __len__(self) -> int:
        return len(self.e._dim_sources)  # noqa: SLF001


class _NotEmittableError(Exception):
    """The graph cannot be emitted directly; the message says why."""


def to_aten_fx(
    graph: Graph, mode: str = "custom", dim_hints: Mapping[str, int] | None = None
) -> torch.fx.GraphModule:
    """Build the core-aten GraphModule torch-mlir imports, without tracing.

    Args:
        graph: the graph; it is not modified.
        mode: "custom" (custom ops as functional `torch.ops.fusegraph.*` calls). Other modes,
            and graphs with an op lacking an emitter, go through the tracing path.
        dim_hints: example size per symbolic dim name (the SymInts' hints).

    Returns:
        A GraphModule like `make_fx`'s: placeholders are the inputs then the weights, it
        returns the outputs then each buffer's final version, and every node has a
        FakeTensor/SymInt `meta["val"]`. `gm.meta["fusegraph_lowering"]` is "direct" or
        "traced"; after a fallback `gm.meta["fusegraph_fallback_reason"]` says why.
    """
    try:
        if mode != "custom":
            raise _NotEmittableError(f"mode {mode!r} is lowered by tracing")
        gm = _DirectBuilder(graph, mode, dim_hints).build()
        gm.meta["fusegraph_lowering"] = "direct"
        return gm
    except _NotEmittableError as why:
        from fusegraph.compiler.lowering.fx import to_fx
        from fusegraph.compiler.lowering.torch_mlir import trace_symbolic

        if mode == "custom":
            logger.warning("to_aten_fx: %s; tracing the whole graph instead", why)
        gm = trace_symbolic(to_fx(graph, mode=mode, inplace=False), graph, dim_hints)  # type: ignore[arg-type]
        gm.meta["fusegraph_lowering"] = "traced"
        gm.meta["fusegraph_fallback_reason"] = str(why)
        return gm


class _DirectBuilder(_FxBuilder):
    """`to_fx`'s walk (placeholders, buffer lineage, outputs) with emitted aten nodes."""

    def __init__(self, graph: Graph, mode: str, dim_hints: Mapping[str, int] | None) -> None:
        super().__init__(graph, mode, inplace=False, device="cpu")
        self.fake_mode, self.symbols = fake_symbols(graph, dim_hints)
        self.root = torch.nn.Module()
        self.e = Emitter(self.fx, self.root, self.fake_mode, self.symbols, mode)

    def build(self) -> torch.fx.GraphModule:
        self._placeholders()
        for op in self.graph.block.ops:
            if isinstance(op, (func.ReturnOp, WeightOp)):
                continue
            self._emit_op(op)
        self.fx.output(tuple(self.env[v] for v in self._output_values()))
        return torch.fx.GraphModule(self.root, self.fx, class_name=_class_name(self.graph.name))

    def _placeholders(self) -> None:
        values: list[SSAValue] = [*self.graph.block.args]
        values += [op.result for op in self.graph.weight_ops.values()]
        names = [f"input_{i}" for i in range(len(self.graph.block.args))]
        names += [_safe_name(name) for name in self.graph.weights]
        used: set[str] = set()
        for i, (value, name) in enumerate(zip(values, names)):
            t = shaped_type(value)
            node = self.fx.placeholder(_unique(name, used))
            node.meta["val"] = self.e.fresh(t)
            self.env[value] = node
            for axis, d in enumerate(t.shape):
                if d.is_symbolic:
                    self.e._dim_sources.setdefault(d.name, (node, axis))  # noqa: SLF001
            if isinstance(t, BufferType):
                self.lineage[value], self.final_version[i] = i, value

    def _emit_op(self, op: Operation) -> None:
        emitter = get_fx_emitter(op)
        if emitter is None:
            raise _NotEmittableError(f"{op.name} has no @fx_emitter")
        try:
            out = emitter(self.e, op, *self._operand_nodes(op))
        except EmitUnsupportedError as err:
            raise _NotEmittableError(f"{op.name}: {err}") from err
        nodes = out if isinstance(out, tuple) else (out,)
        if len(nodes) != len(op.results):
            raise _NotEmittableError(
                f"{op.name}: emitter returned {len(nodes)} results, IR has {len(op.results)}"
            )
        for result, node in zip(op.results, nodes):
            self._check_type(op, result, node)
            self.env[result] = node
        self._track_buffers(op)

    def _check_type(self, op: Operation, result: SSAValue, node: torch.fx.Node) -> None:
        """The emitted value must have the IR's dtype and shape (never emit wrong IR)."""
        t = cast(TensorType | BufferType, result.type)
        val = node.meta.get("val")
        want = [d.value if d.is_static else evaluate_dim(d, self.symbols) for d in t.shape]
        if not isinstance(val, torch.Tensor):
            raise _NotEmittableError(f"{op.name}: emitted {type(val).__name__}, IR says {t}")
        ok = val.dtype == t.dtype.to_torch() and val.dim() == len(want)
        if not (ok and all(same_size(got, w) for got, w in zip(val.shape, want))):
            raise _NotEmittableError(f"{op.name}: emitted {val.dtype} {tuple(val.shape)}, IR says {t}")
