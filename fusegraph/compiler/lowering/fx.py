"""Lowering to torch FX, built directly from the fg IR (no tracing).

Each fg op becomes one `call_function` node whose target is a small named callable that
applies the op's registered torch implementation. Symbolic dims are read from the input
tensors by `aten.sym_size.int` nodes and passed to every op node as keyword arguments, so
the module runs eagerly with ints and also traces under `make_fx(tracing_mode="symbolic")`
with SymInts.

Example:
    >>> gm = to_fx(graph, mode="decomposed")
    >>> print(gm.code)
    >>> outputs = gm(*inputs, *weights)   # graph outputs, then each buffer's final version
"""

from __future__ import annotations

import keyword
import operator
import re
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.fx
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import IRDLOperation, OptOperandDef, VarOperandDef

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.compiler.weight import WeightOp

_MODES = ("custom", "decomposed")
_DEVICES = ("cpu", "cuda")


def to_fx(
    graph: Graph,
    mode: Literal["custom", "decomposed"] = "custom",
    inplace: bool = False,
    device: str = "cpu",
) -> torch.fx.GraphModule:
    """Build a `torch.fx.GraphModule` that computes `graph`.

    Args:
        graph: the graph to lower; it is not modified.
        mode: "custom" calls fused/quantized ops as `torch.ops.fusegraph.*`; "decomposed"
            expands them to aten ops.
        inplace: buffer-writing ops write the caller's tensor in place (the eager runtime);
            otherwise they return a new tensor (the functional form torch-mlir imports).
        device: the torch device ("cpu", "cuda" or "cuda:N") that constants are created on.

    Returns:
        A GraphModule whose placeholders are the graph inputs, then the weights in
        `graph.weights` order; it returns a tuple of the graph outputs followed by the final
        version of each buffer input (in inplace mode, the caller's buffer tensors).
    """
    if mode not in _MODES:
        raise ValueError(f"to_fx: mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if torch.device(device).type not in _DEVICES:
        raise ValueError(f"to_fx: device must be cpu or cuda[:N], got {device!r}")
    builder = _FxBuilder(graph, mode, inplace, device)
    return builder.build()


class _FxBuilder:
    """Walks the func body once, mapping each SSA value to an FX node."""

    def __init__(self, graph: Graph, mode: str, inplace: bool, device: str) -> None:
        self.graph = graph
        self.mode = mode
        self.inplace = inplace
        self.device = device
        self.fx = torch.fx.Graph()
        self.env: dict[SSAValue, torch.fx.Node] = {}
        self.dims: dict[str, torch.fx.Node] = {}
        # Each buffer SSA value -> the index of the buffer input it is a version of.
        self.lineage: dict[SSAValue, int] = {}
        self.final_version: dict[int, SSAValue] = {}

    def build(self) -> torch.fx.GraphModule:
        self._placeholders()
        self._symbolic_dims()
        for op in self.graph.block.ops:
            if not isinstance(op, (func.ReturnOp, WeightOp)):
                self._lower_op(op)
        outputs = [self.env[v] for v in self._output_values()]
        self.fx.output(tuple(outputs))
        self.fx.lint()
        return torch.fx.GraphModule(torch.nn.Module(), self.fx, class_name=_class_name(self.graph.name))

    def _placeholders(self) -> None:
        used: set[str] = set()
        for i, arg in enumerate(self.graph.block.args):
            self.env[arg] = self.fx.placeholder(_unique(f"input_{i}", used))
            if isinstance(arg.type, BufferType):
                self.lineage[arg] = i
                self.final_version[i] = arg
        for name, op in self.graph.weight_ops.items():
            node = self.fx.placeholder(_unique(_safe_name(name), used))
            node.meta["fg_weight_name"] = name
            self.env[op.result] = node

    def _symbolic_dims(self) -> None:
        """One `aten.sym_size.int` node per symbolic name, at its first use in an input."""
        sources: list[SSAValue] = [*self.graph.block.args]
        sources += [op.result for op in self.graph.weight_ops.values()]
        for value in sources:
            shaped = cast(TensorType | BufferType, value.type)
            for axis, dim in enumerate(shaped.shape):
                if dim.is_symbolic and dim.name not in self.dims:
                    self.dims[dim.name] = self.fx.create_node(
                        "call_function", torch.ops.aten.sym_size.int, (self.env[value], axis), name=dim.name
                    )

    def _lower_op(self, op: Operation) -> None:
        args = tuple(self._operand_nodes(op))
        target = _op_callable(op, self.mode, self.inplace, self.device, len(self.env))
        kwargs: dict[str, Any] = {_dim_keyword(name): node for name, node in self.dims.items()}
        node = self.fx.create_node("call_function", target, args, kwargs, name=target.__name__)
        node.meta["fg_op"] = op.name
        results = list(op.results)
        if len(results) == 1:
            self.env[results[0]] = node
        else:
            for i, r in enumerate(results):
                self.env[r] = self.fx.call_function(operator.getitem, (node, i))
        self._track_buffers(op)

    def _operand_nodes(self, op: Operation) -> list[torch.fx.Node | None]:
        """Operand nodes in operand order: None for an absent optional operand, and a
        variadic operand flattened (the torch-impl calling convention)."""
        nodes: list[torch.fx.Node | None] = []
        for name, odef in cast(IRDLOperation, op).get_irdl_definition().operands:
            value = getattr(op, name)
            if isinstance(odef, OptOperandDef):
                nodes.append(None if value is None else self.env[value])
            elif isinstance(odef, VarOperandDef):
                nodes.extend(self.env[v] for v in value)
            else:
                nodes.append(self.env[value])
        return nodes

    def _track_buffers(self, op: Operation) -> None:
        """The i-th buffer result of an op is the next version of its i-th buffer operand."""
        buffer_in = [v for v in op.operands if isinstance(v.type, BufferType)]
        buffer_out = [r for r in op.results if isinstance(r.type, BufferType)]
        if len(buffer_out) > len(buffer_in):
            raise ValueError(
                f"to_fx: {op.name} returns {len(buffer_out)} buffers but takes {len(buffer_in)}; "
                "every buffer result must be the next version of a buffer operand"
            )
        for src, dst in zip(buffer_in, buffer_out):
            if (index := self.lineage.get(src)) is not None:
                self.lineage[dst] = index
                self.final_version[index] = dst

    def _output_values(self) -> list[SSAValue]:
        term = self.graph.block.last_op
        returned = list(term.arguments) if isinstance(term, func.ReturnOp) else []
        return returned + [self.final_version[i] for i in sorted(self.final_version)]


def _op_callable(op: Operation, mode: str, inplace: bool, device: str, index: int) -> Callable[..., Any]:
    """A named function `fg.<op>_<n>(*tensors, **dims)` that runs the op's torch impl."""
    impl = get_torch_impl(op)

    def run(*tensors: Any, **dims: Any) -> Any:
        dims = {name.removesuffix("_"): v for name, v in dims.items()}
        ctx = LoweringContext(mode=mode, inplace=inplace, dims=dims, device=device)  # type: ignore[arg-type]
        return impl(op, *tensors, ctx=ctx)

    name = _safe_name(op.name.removeprefix("fg.")) + f"_{index}"
    run.__name__ = run.__qualname__ = name
    run.__module__ = "fg"  # FX prints the target as `fg_<op>_<n>`
    run.fg_op = op  # type: ignore[attr-defined]
    return run


def _dim_keyword(name: str) -> str:
    """The keyword a dim is passed by; a trailing `_` keeps Python keywords and names that
    already end in `_` printable and unambiguous (`run` strips exactly one)."""
    return f"{name}_" if keyword.iskeyword(name) or name.endswith("_") else name


def _safe_name(name: str) -> str:
    """A Python identifier for an IR name: `layers.0.q_proj.qweight` -> `layers_0_q_proj_qweight`."""
    ident = re.sub(r"\W", "_", name)
    return ident if ident and not ident[0].isdigit() else f"_{ident}"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _class_name(graph_name: str) -> str:
    return "FxGraph_" + _safe_name(graph_name or "graph")
