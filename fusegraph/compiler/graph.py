"""`Graph`: the MAX-like builder around an xDSL module holding one `func.func`."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from io import StringIO
from typing import Any, TypeVar

from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp
from xdsl.ir import Block, Operation, Region
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from fusegraph.compiler.errors import IRVerifyError
from fusegraph.compiler.types import BufferType, TensorType, tensor_type
from fusegraph.compiler.values import BufferValue, TensorValue, Value
from fusegraph.compiler.weight import WeightOp

OpT = TypeVar("OpT", bound=Operation)

_CURRENT: contextvars.ContextVar[tuple[Graph, ...]] = contextvars.ContextVar("fg_graphs", default=())


class Graph:
    """A symbolic graph under construction, and the IR it holds.

    Example:
        >>> with Graph("mlp", input_types=[TensorType(DType.float32, ["batch", 64])]) as g:
        ...     (x,) = g.inputs
        ...     w = g.add_weight("w", TensorType(DType.float32, [64, 64]))
        ...     g.output(ops.relu(x @ w.T))
        >>> print(g)
    """

    def __init__(
        self,
        name: str,
        input_types: Sequence[TensorType | BufferType] = (),
        *,
        module: ModuleOp | None = None,
    ) -> None:
        if module is None:
            for i, t in enumerate(input_types):
                if not isinstance(t, (TensorType, BufferType)):
                    raise TypeError(
                        f"Graph {name!r}: input {i} must be a TensorType or BufferType, got {t!r}"
                    )
                if bad := [str(d) for d in t.shape if d.is_algebraic]:
                    raise ValueError(
                        f"Graph {name!r}: input {i} has algebraic dims {bad}; inputs take static or symbolic dims only"
                    )
            block = Block(arg_types=list(input_types))
            fn = func.FuncOp(name, (list(input_types), []), Region(block))
            module = ModuleOp([fn])
        self.module = module
        # name -> fg.weight op, to find duplicates fast
        self._weights = {op.weight_name: op for op in self.block.ops if isinstance(op, WeightOp)}

    # --- structure ---------------------------------------------------------------------
    @property
    def func(self) -> func.FuncOp:
        """The graph's function."""
        fns = [op for op in self.module.ops if isinstance(op, func.FuncOp)]
        if len(fns) != 1:
            raise IRVerifyError(f"a graph module must hold exactly one func.func, found {len(fns)}")
        return fns[0]

    @property
    def name(self) -> str:
        """The graph's name (the function's symbol)."""
        return self.func.sym_name.data

    @property
    def block(self) -> Block:
        """The function body."""
        return self.func.body.block

    @property
    def inputs(self) -> tuple[Any, ...]:
        """The graph inputs: a `TensorValue` per `TensorType` input, a `BufferValue` per
        `BufferType` input, in declaration order.

        Typed `Any` (as MAX's `Graph.inputs` is) so that unpacking them into layer calls,
        `x, row_offsets, *kv = g.inputs; PagedCacheValues(*kv)`, type-checks.
        """
        return tuple(Value.wrap(a) for a in self.block.args)

    @property
    def weight_ops(self) -> dict[str, WeightOp]:
        """The `fg.weight` ops by name, in program order (read from the IR each time)."""
        return {op.weight_name: op for op in self.block.ops if isinstance(op, WeightOp)}

    @property
    def weights(self) -> dict[str, TensorType]:
        """The weights the graph names, with their types, in program order.

        Read from the IR each time, so a weight a pass erased (or added) is listed as it is now.
        """
        return {name: tensor_type(op.result) for name, op in self.weight_ops.items()}

    @property
    def outputs(self) -> tuple[Value, ...]:
        """The values passed to `output`."""
        term = self.block.last_op
        if not isinstance(term, func.ReturnOp):
            return ()
        return tuple(Value.wrap(v) for v in term.arguments)

    # --- building ----------------------------------------------------------------------
    def __enter__(self) -> Graph:
        _CURRENT.set((*_CURRENT.get(), self))
        return self

    def __exit__(self, *exc: object) -> None:
        _CURRENT.set(_CURRENT.get()[:-1])

    @staticmethod
    def current() -> Graph:
        """The innermost graph being built (inside `with Graph(...)`)."""
        stack = _CURRENT.get()
        if not stack:
            raise RuntimeError("no graph is being built: use `with Graph(...) as g:`")
        return stack[-1]

    def add_op(self, op: OpT) -> OpT:
        """Append a constructed op to the graph and return it (what `emit` does)."""
        term = self.block.last_op
        if isinstance(term, func.ReturnOp):
            raise RuntimeError(f"graph {self.name!r}: cannot add {op.name} after output()")
        self.block.add_op(op)
        return op

    def add_weight(self, name: str, type: TensorType) -> TensorValue:
        """A named constant bound at compile or run time: `fg.weight "name" : type`.

        Adding the same name twice returns the same value when the types agree, and is a
        ValueError when they do not.
        """
        if (existing := self._weights.get(name)) is not None and existing.parent is not self.block:
            del self._weights[name]  # a pass erased it: add it again
            existing = None
        if existing is not None:
            if existing.results[0].type != type:
                raise ValueError(f"weight {name!r}: already added as {existing.results[0].type}, now {type}")
            return TensorValue(existing.results[0])
        op = self.add_op(WeightOp(name, type))
        self._weights[name] = op
        return TensorValue(op.results[0])

    def output(self, *values: Value) -> None:
        """End the graph with `func.return` of `values`."""
        for i, v in enumerate(values):
            if not isinstance(v, Value):
                raise TypeError(f"Graph.output: value {i} must be a graph value, got {type(v).__name__}")
        ssa = [v.ssa for v in values]
        self.add_op(func.ReturnOp(*ssa))
        self.func.function_type = FunctionType.from_lists(
            [a.type for a in self.block.args], [v.type for v in ssa]
        )

    # --- IR ----------------------------------------------------------------------------
    def verify(self) -> None:
        """Run the structural checks (`structure.py`) and xDSL's verifier, which runs every op's
        shape rule. Raises IRVerifyError."""
        from fusegraph.compiler.structure import first_problem

        if (problem := first_problem(self.module)) is not None:
            raise IRVerifyError(problem.message)
        try:
            self.module.verify()
        except VerifyException as err:
            raise IRVerifyError(str(err)) from None

    def __str__(self) -> str:
        out = StringIO()
        Printer(stream=out).print_op(self.module)
        return out.getvalue() + "\n"

    def clone(self) -> Graph:
        """A deep copy of the graph."""
        return Graph(self.name, module=self.module.clone())

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.block.args)} inputs, {len(self.weights)} weights)"


def emit(op: OpT) -> OpT:
    """Append a constructed op to the graph being built, and return it.

    Example:
        >>> y = TensorValue(emit(RmsNormOp(x, w, eps=1e-6)).result)
    """
    return Graph.current().add_op(op)


def emit_tensor(op: Operation) -> TensorValue:
    """`emit` an op with one tensor result, and return that result as a TensorValue.

    Example:
        >>> y = emit_tensor(RmsNormOp(x, w, eps=1e-6))
    """
    return TensorValue(emit(op).results[0])


__all__ = ["BufferValue", "Graph", "TensorValue", "emit", "emit_tensor"]
