"""`dce`: erase Pure ops whose results nobody uses; never a buffer write.

Before:
    %0 = fg.relu %x : ...              // unused
    %b1 = fg.kv_cache.store %b0, ...   // unused, but a write: it stays
    func.return %y
After:
    %b1 = fg.kv_cache.store %b0, ...
    func.return %y

xDSL's own `dce` trusts the `Pure` trait. A buffer-writing op (one with a `!fg.buffer`
result) is an in-place write at run time, so it stays even if it is marked Pure and even
if nobody reads the version it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.transforms.dead_code_elimination import is_trivially_dead

from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    apply_patterns,
    current_report,
    no_match,
    writes_buffer,
)


def is_removable(op: Operation) -> bool:
    """Dead, side-effect free, and not a buffer write."""
    return op.parent is not None and not writes_buffer(op) and is_trivially_dead(op)


class EraseDeadOp(GuardedPattern[Operation]):
    """unused Pure op -> nothing"""

    anchor = Operation
    counter = "erased"
    report_refusals = False  # every live op would be a "candidate": too noisy to report

    def match(self, op: Operation) -> Operation | NoMatch:
        return op if is_removable(op) else no_match("live")

    def rewrite(self, match: Operation, rewriter) -> None:  # type: ignore[no-untyped-def]
        rewriter.erase(match)


@dataclass(frozen=True)
class BufferAwareDCE(ModulePass):
    """Dead-code elimination that keeps every buffer write."""

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("erased")
        apply_patterns(op, [EraseDeadOp(report)], reverse=True)
