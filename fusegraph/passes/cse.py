"""`cse`: merge identical side-effect-free ops; never merge two buffer writes.

Before:
    %a = fg.reshape %x : ... -> !fg.tensor<[T, 4, 16], f32, cpu>
    %b = fg.reshape %x : ... -> !fg.tensor<[T, 4, 16], f32, cpu>
    %z = fg.add %a, %b ...
After:
    %a = fg.reshape %x : ... -> !fg.tensor<[T, 4, 16], f32, cpu>
    %z = fg.add %a, %a ...

This is xDSL's CSEDriver as it is: a buffer-writing op declares its write
(`compiler/effects.py` WritesBuffer), so two identical stores are never merged. The pass
only adds the `eliminated` count to the pass report.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.common_subexpression_elimination import CSEDriver

from fusegraph.passes.patterns import current_report


@dataclass(frozen=True)
class CommonSubexpressionElimination(ModulePass):
    """Common-subexpression elimination, counted in the pass report."""

    name = "cse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("eliminated")
        before = sum(1 for _ in op.walk())
        CSEDriver().simplify(op)
        report.count("eliminated", before - sum(1 for _ in op.walk()))
