"""Lowering to core-aten FX without tracing the whole graph: each fg op's nodes are derived
from its torch implementation (the one statement of its math) and spliced in, with
fake-tensor metadata.

`make_fx` of `to_fx`'s module costs about 1.7 ms per op (proxy and fake-tensor dispatch
through every op of every layer). Here:
- an op whose torch impl makes exactly one `torch.ops.fusegraph.*` call (the custom ops in
  mode "custom") is run once under a dispatch mode that records that call as one node; its
  results' FakeTensors are built from the IR result types (what the op's `register_fake`
  returns), so there is no fake dispatch at all;
- any other op's torch impl is traced alone (`symbolic.trace_op`: `make_fx`, symbolic, on the
  operands' FakeTensors of this module's one FakeTensorMode/ShapeEnv), once per op signature
  (op class, properties, operand and result types, operand strides), and the traced nodes are
  copied in for every op with that signature: the identical layers of a model trace each op
  once. Sizes the impl reads with `ctx.size(dim)` are placeholders bound to this module's one
  `aten.sym_size.int` node per dim name.

What torch-mlir's `FxImporter` needs holds: `node.meta["val"]` is a FakeTensor (or SymInt) of
one `FakeTensorMode(shape_env=ShapeEnv())` with one symbol per dim name. If an impl cannot be
traced alone, or a result disagrees with the IR type, the whole graph is traced instead
(`to_fx` + `make_fx`) and the reason is logged.

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
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.node import Argument, map_aggregate
from torch.utils._python_dispatch import TorchDispatchMode
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import LoweringContext, evaluate_dim, get_torch_impl
from fusegraph.compiler.lowering.fx import _class_name, _FxBuilder, _safe_name, _unique
from fusegraph.compiler.lowering.symbolic import (
    fake_symbols,
    fresh_fake,
    op_dim_names,
    same_size,
    trace_op,
    trace_symbolic,
)
from fusegraph.compiler.types import BufferType, TensorType, shaped_type
from fusegraph.compiler.weight import WeightOp

logger = logging.getLogger(__name__)
aten = torch.ops.aten


class _NotEmittableError(Exception):
    """The graph cannot be emitted op by op; the message says why."""


def to_aten_fx(
    graph: Graph, mode: str = "custom", dim_hints: Mapping[str, int] | None = None
) -> torch.fx.GraphModule:
    """Build the core-aten GraphModule torch-mlir imports, one op at a time.

    Args:
        graph: the graph; it is not modified.
        mode: "custom" (custom ops as functional `torch.ops.fusegraph.*` calls). Other modes
            go through the tracing path.
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

        if mode == "custom":
            logger.warning("to_aten_fx: %s; tracing the whole graph instead", why)
        gm = trace_symbolic(to_fx(graph, mode=mode, inplace=False), graph, dim_hints)  # type: ignore[arg-type]
        gm.meta["fusegraph_lowering"] = "traced"
        gm.meta["fusegraph_fallback_reason"] = str(why)
        return gm


# An op's traced graph and the dim names its trailing placeholders stand for.
_Traced = tuple[torch.fx.GraphModule, list[str]]


class _DirectBuilder(_FxBuilder):
    """`to_fx`'s walk (placeholders, buffer lineage, outputs) with derived aten nodes."""

    def __init__(self, graph: Graph, mode: str, dim_hints: Mapping[str, int] | None) -> None:
        super().__init__(graph, mode, inplace=False, device="cpu")
        self.fake_mode, self.symbols = fake_symbols(graph, dim_hints)
        self.root = torch.nn.Module()
        self._dim_sources: dict[str, tuple[torch.fx.Node, int]] = {}
        self._dim_nodes: dict[str, torch.fx.Node] = {}
        self._names_of = {s.node.expr: name for name, s in self.symbols.items()}
        self._traced: dict[tuple[Any, ...], _Traced] = {}
        self._not_one_call: set[type[Operation]] = set()
        self._constants: dict[tuple[int, Any], str] = {}
        self._fresh_vals: dict[tuple[Any, ...], FakeTensor] = {}
        self._checked: set[tuple[int, tuple[Any, ...]]] = set()

    def build(self) -> torch.fx.GraphModule:
        self._placeholders()
        for op in self.graph.block.ops:
            if not isinstance(op, (func.ReturnOp, WeightOp)):
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
            node.meta["val"] = self._fresh(t)
            self.env[value] = node
            for axis, d in enumerate(t.shape):
                if d.is_symbolic:
                    self._dim_sources.setdefault(d.name, (node, axis))
            if isinstance(t, BufferType):
                self.lineage[value], self.final_version[i] = i, value

    def _emit_op(self, op: Operation) -> None:
        operands = self._operand_nodes(op)
        out = None if type(op) in self._not_one_call else self._one_custom_call(op, operands)
        if out is None:
            out = self._derive(op, operands)
        nodes = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(nodes) != len(op.results):
            raise _NotEmittableError(f"{op.name}: lowered to {len(nodes)} results, IR has {len(op.results)}")
        for result, node in zip(op.results, nodes):
            # Spliced copies and custom-op results share fake values: check each one once.
            if (checked := (id(node.meta.get("val")), _type_key(result.type))) not in self._checked:
                self._check_type(op, result, node)
                self._checked.add(checked)
            self.env[result] = node
        self._track_buffers(op)

    def _one_custom_call(self, op: Operation, operands: list[torch.fx.Node | None]) -> Any:
        """Run the impl under `_OneCall`; None (and never again for this op class) if it
        does anything but one `torch.ops.fusegraph.*` call on its operands."""
        vals = _distinct([None if n is None else n.meta["val"] for n in operands], self.fake_mode)
        node_of = {id(v): n for v, n in zip(vals, operands) if n is not None}
        recorder = _OneCall(self, op, node_of)
        ctx = LoweringContext(mode=cast(Any, self.mode), inplace=False, dims=dict(self.symbols))
        try:
            with recorder:
                out = get_torch_impl(op)(op, *vals, ctx=ctx)
            return map_aggregate(out, recorder.result_node)
        except _NotOneCallError:
            if recorder.node is not None:  # unused; the graph must not keep it
                for user in list(recorder.node.users):
                    self.fx.erase_node(user)
                self.fx.erase_node(recorder.node)
            self._not_one_call.add(type(op))
            return None

    def _derive(self, op: Operation, operands: list[torch.fx.Node | None]) -> Any:
        """Trace `op`'s torch impl alone (once per op signature) and splice its nodes in."""
        vals = [None if n is None else n.meta["val"] for n in operands]
        key = (
            type(op),
            tuple(sorted(op.properties.items())),
            tuple(sorted(op.attributes.items())),
            tuple(v.type for v in (*op.operands, *op.results)),
            tuple(None if v is None else _meta_key(v) for v in vals),
        )
        if (traced := self._traced.get(key)) is None:
            names = op_dim_names(op)
            dims = {n: self.symbols[n] for n in names}
            try:
                gm = trace_op(op, _distinct(vals, self.fake_mode), dims, self.fake_mode, self.mode)
            except Exception as err:  # noqa: BLE001 - any failure: trace the whole graph instead
                raise _NotEmittableError(
                    f"{op.name}: tracing its torch implementation failed: {err}"
                ) from err
            traced = self._traced[key] = (gm, names)
        return self._splice(*traced, [n for n in operands if n is not None])

    def _splice(self, sub: torch.fx.GraphModule, names: list[str], inputs: list[torch.fx.Node]) -> Argument:
        """Copy `sub`'s nodes (with their fake values) to the end of the graph: its tensor
        placeholders are `inputs`; its dim placeholders, and each `sym_size` of a named dim,
        are the graph's one size node per dim name."""
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        holders = [n for n in sub.graph.nodes if n.op == "placeholder"]
        env.update(zip(holders, inputs))
        for holder, name in zip(holders[len(inputs) :], names):
            if holder.users:
                env[holder] = self._symbol(name)
        for node in sub.graph.nodes:
            if node.op == "output":
                results: Argument = torch.fx.map_arg(node.args[0], env.__getitem__)
                return results
            if node.op == "get_attr":
                env[node] = self._constant(sub, node)
            elif node.target is aten.sym_size.int and (dim := self._dim_name(node)) is not None:
                env[node] = self._symbol(dim)
            elif node.op != "placeholder":
                env[node] = self.fx.node_copy(node, env.__getitem__)
        raise _NotEmittableError("a traced op graph has no output")

    def _dim_name(self, node: torch.fx.Node) -> str | None:
        val = node.meta.get("val")
        return self._names_of.get(val.node.expr) if isinstance(val, torch.SymInt) else None

    def _symbol(self, name: str) -> torch.fx.Node:
        """One `aten.sym_size.int` node per dim name, emitted at its first use."""
        if (node := self._dim_nodes.get(name)) is None:
            source, axis = self._dim_sources[name]
            node = self._dim_nodes[name] = self.fx.call_function(aten.sym_size.int, (source, axis))
            node.meta["val"] = source.meta["val"].shape[axis]
        return node

    def _constant(self, sub: torch.fx.GraphModule, node: torch.fx.Node) -> torch.fx.Node:
        """A module constant of a traced op, registered once per traced op graph."""
        if (name := self._constants.get((id(sub), node.target))) is None:
            name = self._constants[(id(sub), node.target)] = f"_tensor_constant{len(self._constants)}"
            self.root.register_buffer(name, getattr(sub, cast(str, node.target)))
        copy = self.fx.get_attr(name)
        copy.meta.update(node.meta)
        return copy

    def _fresh(self, t: TensorType | BufferType) -> FakeTensor:
        """A contiguous FakeTensor of IR type `t`. Nodes of equal type share one (building one
        costs ~0.3 ms of ShapeEnv work; values are read only for their shape and dtype)."""
        if (cached := self._fresh_vals.get(key := _type_key(t))) is None:
            sizes = [d.value if d.is_static else evaluate_dim(d, self.symbols) for d in t.shape]
            cached = self._fresh_vals[key] = fresh_fake(self.fake_mode, sizes, t.dtype.to_torch())
        return cached

    def _check_type(self, op: Operation, result: SSAValue, node: torch.fx.Node) -> None:
        """The lowered value must have the IR's dtype and shape (never emit wrong IR)."""
        t = cast(TensorType | BufferType, result.type)
        val = node.meta.get("val")
        want = [d.value if d.is_static else evaluate_dim(d, self.symbols) for d in t.shape]
        if not isinstance(val, torch.Tensor):
            raise _NotEmittableError(f"{op.name}: lowered to {type(val).__name__}, IR says {t}")
        ok = val.dtype == t.dtype.to_torch() and val.dim() == len(want)
        if not (ok and all(same_size(got, w) for got, w in zip(val.shape, want))):
            raise _NotEmittableError(f"{op.name}: lowered to {val.dtype} {tuple(val.shape)}, IR says {t}")


class _NotOneCallError(Exception):
    """The impl did something other than one `torch.ops.fusegraph.*` call on its operands."""


class _OneCall(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records an impl's one `torch.ops.fusegraph.*` call as a node. The results are fresh
    FakeTensors of the IR result types (a custom op returns new contiguous tensors of them:
    its `register_fake` says so and opcheck tests it) instead of a fake dispatch (~1 ms)."""

    def __init__(self, builder: _DirectBuilder, op: Operation, node_of: dict[int, torch.fx.Node]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.builder, self.op, self.node_of = builder, op, node_of
        self.node: torch.fx.Node | None = None
        self.results: dict[int, torch.fx.Node] = {}

    def __torch_dispatch__(
        self,
        func: Any,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        if self.node is not None or getattr(func, "namespace", None) != "fusegraph":
            raise _NotOneCallError(str(func))
        b = self.builder
        vals = [b._fresh(cast(TensorType, t)) for t in self.op.result_types]  # noqa: SLF001
        returns = func._schema.returns  # noqa: SLF001
        if len(returns) == 1 and isinstance(returns[0].type, torch.ListType):
            val: Any = vals
        elif len(returns) == len(vals):
            val = vals[0] if len(vals) == 1 else tuple(vals)
        else:
            raise _NotOneCallError(f"{func} returns {len(returns)} values, IR has {len(vals)}")
        node_args = map_aggregate(tuple(args), self._arg)
        node_kwargs = map_aggregate(dict(kwargs or {}), self._arg)
        self.node = node = b.fx.create_node(
            "call_function", func, cast(Any, node_args), cast(Any, node_kwargs)
        )
        node.meta["val"] = val
        if isinstance(val, torch.Tensor):
            self.results[id(val)] = node
            return val
        # One distinct FakeTensor per item (equal types share one in `_fresh`), so that the
        # impl's return value maps back to the right `getitem`.
        items: list[FakeTensor] = []
        for i, v in enumerate(val):
            item = b.fx.call_function(operator.getitem, (node, i))
            item.meta["val"] = v = _fake_copy(v, b.fake_mode) if any(v is x for x in items) else v
            self.results[id(v)] = item
            items.append(v)
        node.meta["val"] = type(val)(items)
        return node.meta["val"]

    def result_node(self, v: Any) -> torch.fx.Node:
        """The node of a value the impl returns: one of the recorded call's results."""
        if (node := self.results.get(id(v))) is None:
            raise _NotOneCallError("the impl returns a value that is not the call's result")
        return node

    def _arg(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            if (node := self.node_of.get(id(a))) is None:
                raise _NotOneCallError("a tensor argument that is not an operand")
            return node
        if isinstance(a, torch.SymInt):
            raise _NotOneCallError("a symbolic size argument")
        return a


def _distinct(vals: Sequence[FakeTensor | None], fake_mode: FakeTensorMode) -> list[FakeTensor | None]:
    """`vals` with every repeated FakeTensor object replaced by an equal new one: equal-typed
    nodes share fakes, but tracing tells tensors apart by identity."""
    seen: set[int] = set()
    out: list[FakeTensor | None] = []
    for v in vals:
        if v is not None and id(v) in seen:
            v = _fake_copy(v, fake_mode)
        if v is not None:
            seen.add(id(v))
        out.append(v)
    return out


def _fake_copy(v: FakeTensor, fake_mode: FakeTensorMode) -> FakeTensor:
    meta = torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")
    return FakeTensor(fake_mode, meta, torch.device("cpu"))


def _type_key(t: Any) -> tuple[Any, ...]:
    return (tuple(t.shape), t.dtype) if isinstance(t, (TensorType, BufferType)) else ()


def _meta_key(val: FakeTensor) -> tuple[Any, ...]:
    """What an op's traced graph depends on in an operand: dtype, sizes, strides, offset."""

    def h(s: Any) -> Any:
        return s.node.expr if isinstance(s, torch.SymInt) else s

    return (val.dtype, *map(h, val.shape), None, *map(h, val.stride()), h(val.storage_offset()))
