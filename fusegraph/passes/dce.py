"""`dce`: erase side-effect-free ops whose results nobody uses; never a buffer write.

Before:
    %0 = fg.relu %x : ...              // unused
    %b1 = fg.kv_cache.store %b0, ...   // unused, but a write: it stays
    func.return %y
After:
    %b1 = fg.kv_cache.store %b0, ...
    func.return %y

This is xDSL's dead-code rule (`is_trivially_dead`) as it is: a buffer-writing op declares
its write (`compiler/effects.py` WritesBuffer), so it stays even when nobody reads the
version it returns. The pass only adds the `erased` count to the pass report.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.transforms.dead_code_elimination import is_trivially_dead

from fusegraph.passes.patterns import GuardedPattern, NoMatch, apply_patterns, current_report, no_match


def is_removable(op: Operation) -> bool:
    """Dead: no result is used and the op declares no effect beyond them."""
    return op.parent is not None and is_trivially_dead(op)


class EraseDeadOp(GuardedPattern[Operation]):
    """unused side-effect-free op -> nothing"""

    anchor = Operation
    counter = "erased"
    report_refusals = False  # every live op would be a "candidate": too noisy to report

    def match(self, op: Operation) -> Operation | NoMatch:
        return op if is_removable(op) else no_match("live")

    def rewrite(self, match: Operation, rewriter: PatternRewriter) -> None:
        rewriter.erase(match)


@dataclass(frozen=True)
class DeadCodeElimination(ModulePass):
    """Dead-code elimination, counted in the pass report."""

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("erased")
        apply_patterns(op, [EraseDeadOp(report)], reverse=True)
