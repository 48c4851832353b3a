"""TEMPORARY (session of 2026-11-30, #13): the old `emit(op_cls, operands, properties,
result_types=...)`, kept only while the op families move to self-constructing ops.
Deleted when the last op family is converted."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xdsl.ir import Attribute, Operation
from xdsl.irdl import IRDLOperation

from fusegraph.compiler.errors import user_source_line
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.opbase import _slot_ssa


def emit(
    op_cls: type[IRDLOperation],
    operands: Sequence[Any],
    properties: Mapping[str, Attribute] | None = None,
    *,
    result_types: Sequence[Any] | Callable[[], Sequence[Any]],
) -> Operation:
    ssa = [_slot_ssa(v) for v in operands]
    try:
        types = list(result_types() if callable(result_types) else result_types)
    except ValueError as err:
        raise ValueError(f"{err} (at {user_source_line()})") from None
    op = op_cls.build(
        operands=[[] if v is None else v for v in ssa], properties=dict(properties or {}), result_types=types
    )
    return Graph.current().add_op(op)
