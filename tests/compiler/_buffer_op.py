"""A test-only buffer-writing op (not in the fg dialect): `buffer[rows] += x`.

It lets the lowering and runtime tests exercise buffer versions without depending on the
KV-cache ops. It is deliberately not `register_op`-ed, so the round-trip coverage test and
the parser never see it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, result_def

from fusegraph.compiler import BufferType, BufferValue, TensorType, TensorValue
from fusegraph.compiler.graph import emit
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand


@irdl_op_definition
class BufferAccumulateOp(FgOp):
    """`test.buffer_accumulate`: the next buffer version is `buffer + x` (broadcast)."""

    name = "test.buffer_accumulate"
    buffer = operand_def(BufferType)
    x = operand_def(TensorType)
    result = result_def(BufferType)
    assembly_format = "$buffer `,` $x attr-dict `:` type($buffer) `,` type($x) `->` type($result)"

    def __init__(self, buffer: Operand, x: Operand) -> None:
        super().__init__([buffer, x], rule=self.rule)

    @staticmethod
    def rule(buffer: Attribute, x: Attribute) -> list[Attribute]:
        """The next version has the buffer's type."""
        return [buffer]

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.buffer.type, self.x.type)


def buffer_accumulate(buffer: BufferValue, x: TensorValue) -> BufferValue:
    """Emit `test.buffer_accumulate`; returns the next buffer version."""
    return BufferValue(emit(BufferAccumulateOp(buffer, x)).results[0])


@torch_impl(BufferAccumulateOp)
def _buffer_accumulate_torch(
    op: BufferAccumulateOp, buffer: torch.Tensor, x: torch.Tensor, *, ctx: LoweringContext
) -> torch.Tensor:
    if ctx.inplace:
        return buffer.add_(x)
    return buffer + x
