"""The base class of fg ops, and the list of op classes that make up the `fg` dialect.

An fg op constructs itself, as xDSL ops do (`AddfOp(lhs, rhs)`): its typed `__init__` takes
graph values or SSA values and Python values, encodes its own properties, and gets its
result types from the class's one shape rule. `verify_` runs that same rule, so parsed and
rewritten IR is checked exactly as built IR is:

    class RmsNormOp(FgOp):
        def __init__(self, input: Operand, weight: Operand, *, eps: float) -> None:
            super().__init__([input, weight], {"eps": f64_attr(eps)}, rule=partial(self.rule, eps=eps))

        @staticmethod
        def rule(x: Attribute, weight: Attribute, *, eps: float) -> list[Attribute]: ...

        def infer_types(self) -> Sequence[Attribute]:
            return self.rule(self.input.type, self.weight.type, eps=self.eps.value.data)

A shape-rule `ValueError` raised while constructing gets the user's source line appended
(MAX's eager errors); while verifying it becomes a `VerifyException`.

The IR core never imports `fusegraph.ops`: the op families add their classes with
`register_op` when they are imported, and `fusegraph.dialect` (which imports them) builds
the `fg` Dialect from `registered_ops()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict
from xdsl.utils.exceptions import VerifyException

from fusegraph.compiler.errors import user_source_line
from fusegraph.compiler.values import Value

#: What an op constructor takes for an operand: a graph value or an SSA value.
Operand = Value | SSAValue
#: An operand slot: one value, a list (variadic operand), or None (absent optional operand).
OperandSlot = Operand | Sequence[Operand] | None
#: What a shape rule receives per operand slot: its type, a list of types, or None.
OperandTypes = Attribute | list[Attribute] | None
#: What a shape rule returns per result: a type, or a list of types for a variadic result.
ResultTypes = Sequence[Attribute | Sequence[Attribute]]

_OPS: list[type[Operation]] = []

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


def registered_ops() -> list[type[Operation]]:
    """Every op class registered so far, in registration order (`fusegraph.dialect` imports
    the op families first, so that is every op of the `fg` dialect)."""
    return list(_OPS)


def to_ssa(value: Operand) -> SSAValue:
    """The SSA value behind a graph value (an SSA value is returned as it is)."""
    if isinstance(value, Value):
        return value.ssa
    if isinstance(value, SSAValue):
        return value
    raise TypeError(f"expected a graph value, got {type(value).__name__}: {value!r}")


def _slot_ssa(slot: OperandSlot) -> SSAValue | list[SSAValue] | None:
    if slot is None:
        return None
    if isinstance(slot, (Value, SSAValue)):
        return to_ssa(slot)
    return [to_ssa(v) for v in slot]


def _slot_types(slot: SSAValue | list[SSAValue] | None) -> OperandTypes:
    if slot is None:
        return None
    if isinstance(slot, SSAValue):
        return slot.type
    return [v.type for v in slot]


class FgOp(IRDLOperation):
    """Base of fg ops. Subclasses bring a typed `__init__` that calls this one, and
    `infer_types`: the op's shape rule applied to its own operands and properties.

    Properties print in the attribute dictionary (`{layer_idx = 0 : i64}`), which keeps the
    text readable and lets every op share one assembly style.
    """

    irdl_options = (ParsePropInAttrDict(),)

    def __init__(
        self,
        operands: Sequence[OperandSlot],
        properties: Mapping[str, Attribute] | None = None,
        *,
        rule: Callable[..., ResultTypes],
    ) -> None:
        """Build the op from operand slots and encoded properties; `rule(*operand_types)`
        gives the result types (the class's shape rule with the Python properties bound)."""
        ssa = [_slot_ssa(slot) for slot in operands]
        try:
            result_types = list(rule(*(_slot_types(s) for s in ssa)))
        except ValueError as err:
            raise ValueError(f"{err} (at {user_source_line()})") from None
        super().__init__(
            operands=[[] if s is None else s for s in ssa],
            properties=dict(properties or {}),
            result_types=result_types,
        )

    def infer_types(self) -> Sequence[Attribute | Sequence[Attribute]]:
        """The result types the shape rule gives for this op's operands and properties.

        Every registered op overrides this (`register_op` checks); the base is the contract.
        """
        raise TypeError(f"{self.name}: an FgOp must implement infer_types (its shape rule)")

    def verify_(self) -> None:
        try:
            expected = _flatten(self.infer_types())
        except ValueError as err:
            raise VerifyException(str(err)) from None
        actual = [r.type for r in self.results]
        if len(expected) != len(actual):
            raise VerifyException(f"{self.name}: expected {len(expected)} results, got {len(actual)}")
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if want != got:
                raise VerifyException(f"{self.name}: result {i} has type {got}, expected {want}")


def _flatten(types: Sequence[Attribute | Sequence[Attribute]]) -> list[Attribute]:
    out: list[Attribute] = []
    for t in types:
        if isinstance(t, Attribute):
            out.append(t)
        else:
            out.extend(t)
    return out
