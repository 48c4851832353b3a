"""`cse`: merge identical Pure ops; never merge two buffer writes.

Before:
    %a = fg.reshape %x : ... -> !fg.tensor<[T, 4, 16], f32, cpu>
    %b = fg.reshape %x : ... -> !fg.tensor<[T, 4, 16], f32, cpu>
    %z = fg.add %a, %b ...
After:
    %a = fg.reshape %x : ... -> !fg.tensor<[T, 4, 16], f32, cpu>
    %z = fg.add %a, %a ...

Built on xDSL's CSEDriver. Two identical stores (same buffer version, same data) would
look mergeable to it when the op is marked Pure, but each is an in-place write at run
time, so ops with a `!fg.buffer` result are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.transforms.common_subexpression_elimination import CSEDriver

from fusegraph.passes.patterns import current_report, writes_buffer


class _BufferAwareCSEDriver(CSEDriver):
    def _simplify_operation(self, op: Operation) -> None:
        if writes_buffer(op):  # neither merged nor known: a later twin is a second write
            return
        super()._simplify_operation(op)


@dataclass(frozen=True)
class BufferAwareCSE(ModulePass):
    """Common-subexpression elimination that keeps every buffer write."""

    name = "cse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("eliminated")
        before = sum(1 for _ in op.walk())
        _BufferAwareCSEDriver().simplify(op)
        report.count("eliminated", before - sum(1 for _ in op.walk()))
