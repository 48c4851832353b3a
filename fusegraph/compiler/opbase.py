"""The base class of fg ops, the op registry that makes up the `fg` dialect, and `emit`,
which builds an op into the current graph.

Every op runs its shape rule twice: when it is built (so the user gets a ValueError
pointing at their line) and in `verify_` (so parsed or rewritten IR is checked too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict
from xdsl.utils.exceptions import VerifyException

from fusegraph.compiler.errors import user_source_line

_OPS: list[type[Operation]] = []
_ATTRS: list[type[Attribute]] = []

OpT = TypeVar("OpT", bound=type[Operation])


def register_op(cls: OpT) -> OpT:
    """Add an op class to the `fg` dialect (apply after `@irdl_op_definition`).

    An `FgOp` must bring its shape rule: registering one that does not override
    `infer_types` is a TypeError, so the base method below is never reached by a dialect op.
    """
    if issubclass(cls, FgOp) and cls.infer_types is FgOp.infer_types:
        raise TypeError(f"{cls.__name__} ({cls.name}): an FgOp must implement infer_types (its shape rule)")
    if cls not in _OPS:
        _OPS.append(cls)
    return cls


def register_attr(cls: type[Attribute]) -> type[Attribute]:
    """Add an attribute or type class to the `fg` dialect."""
    if cls not in _ATTRS:
        _ATTRS.append(cls)
    return cls


def registered_ops() -> list[type[Operation]]:
    """Every op class of the `fg` dialect, in registration order."""
    import fusegraph.ops  # noqa: F401 - importing the op families registers them

    return list(_OPS)


def registered_attrs() -> list[type[Attribute]]:
    """Every attribute and type class of the `fg` dialect."""
    import fusegraph.ops  # noqa: F401

    return list(_ATTRS)


class FgOp(IRDLOperation):
    """Base of fg ops. Subclasses implement `infer_types`: the op's shape rule applied to
    its own operands and properties. `verify_` checks the results against it.

    Properties print in the attribute dictionary (`{layer_idx = 0 : i64}`), which keeps the
    text readable and lets every op share one assembly style.
    """

    irdl_options = (ParsePropInAttrDict(),)

    def infer_types(self) -> Sequence[Attribute]:
        """The result types the shape rule gives for this op's operands and properties.

        Every registered op overrides this (`register_op` checks); the base is the contract.
        """
        raise TypeError(f"{self.name}: an FgOp must implement infer_types (its shape rule)")

    def verify_(self) -> None:
        try:
            expected = list(self.infer_types())
        except ValueError as err:
            raise VerifyException(str(err)) from None
        actual = [r.type for r in self.results]
        if len(expected) != len(actual):
            raise VerifyException(f"{self.name}: expected {len(expected)} results, got {len(actual)}")
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if want != got:
                raise VerifyException(f"{self.name}: result {i} has type {got}, expected {want}")


def emit(
    op_cls: type[IRDLOperation],
    operands: Sequence[Any],
    properties: Mapping[str, Attribute] | None = None,
    *,
    result_types: Sequence[Any] | Callable[[], Sequence[Any]],
) -> Operation:
    """Build `op_cls` into the current graph and return the op.

    Operands may be TensorValues, BufferValues, SSAValues, or None (an absent optional
    operand); a list stands for a variadic operand. `result_types` is a list (a nested list
    for a variadic result), or a callable returning one that applies the shape rule; a
    ValueError it raises is re-raised with the user's source line appended.
    """
    from fusegraph.compiler.graph import Graph
    from fusegraph.compiler.values import Value

    graph = Graph.current()
    ssa = [_to_ssa(v, Value) for v in operands]
    try:
        types = list(result_types() if callable(result_types) else result_types)
    except ValueError as err:
        raise ValueError(f"{err} (at {user_source_line()})") from None
    op = op_cls.build(
        operands=[[] if v is None else v for v in ssa],
        properties=dict(properties or {}),
        result_types=types,
    )
    graph._insert(op)  # noqa: SLF001 - the graph owns insertion
    return op


def _to_ssa(value: Any, value_cls: type) -> SSAValue | list[SSAValue] | None:
    if isinstance(value, (list, tuple)):
        return [_to_ssa(v, value_cls) for v in value]  # type: ignore[misc]
    if value is None:
        return None
    if isinstance(value, value_cls):
        return value.ssa  # type: ignore[attr-defined]
    if isinstance(value, SSAValue):
        return value
    raise TypeError(f"expected a graph value, got {type(value).__name__}: {value!r}")
