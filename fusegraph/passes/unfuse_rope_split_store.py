"""`unfuse-rope-split-store`: fg.rope_split_store  ==>  the canonical unfused chain.

The exact inverse of `fuse-rope-split-store`, for testing and for backends without the
fused kernel: `%q2, %b2 = fg.rope_split_store %qkv, ...` becomes the chain that
`ops/rope_split_store_chain.py` defines (split, reshapes, two ropes, two stores, reshape),
whose last reshape and value store give `%q2` and `%b2`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter

from fusegraph.ops.rope_split_store import RopeSplitStoreOp
from fusegraph.ops.rope_split_store_chain import UnfusedChain
from fusegraph.passes.patterns import GuardedPattern, NoMatch, apply_patterns, current_report


class UnfuseRopeSplitStorePattern(GuardedPattern[RopeSplitStoreOp]):
    """fg.rope_split_store -> split, reshapes, two ropes, two stores, reshape"""

    anchor = RopeSplitStoreOp
    counter = "unfused"

    def match(self, op: RopeSplitStoreOp) -> RopeSplitStoreOp | NoMatch:
        return op  # every fused op has an unfused form

    def rewrite(self, match: RopeSplitStoreOp, rewriter: PatternRewriter) -> None:
        chain = UnfusedChain.of(match)
        rewriter.replace(match, chain.ops(), [chain.q, chain.kv])


@dataclass(frozen=True)
class UnfuseRopeSplitStore(ModulePass):
    """fg.rope_split_store  ==>  split -> rope(q), rope(k) -> store(k), store(v)"""

    name = "unfuse-rope-split-store"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("unfused")
        apply_patterns(op, [UnfuseRopeSplitStorePattern(report)])
