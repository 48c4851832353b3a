"""`fuse-rope-split-store`: split -> reshape -> rope(q), rope(k) -> store(k), store(v)  ==>  one op

Matches the canonical unfused chain (`ops/rope_split_store_chain.py`, docs/internals.md),
anchored at the value store, and replaces it with the one op it equals:
    %q2, %b2 = fg.rope_split_store %qkv, %ro, %freqs, %b0, %lens, %lookup
                 {head_dim = 16, interleaved = false, layer_idx = 3, n_heads = 4, n_kv_heads = 2}

After `canonicalize` (reshape-free form) `%q2` is gone and `%qr` feeds `fg.attention.paged`
directly; then the fused op's q result is reshaped back for those users:
    %q2, %b2 = fg.rope_split_store ...    %qr = fg.reshape %q2   // [T, H, D]

It refuses (saying why, in debug mode) when an intermediate has another user, the ropes
disagree, the stores are not a K-then-V chain on one layer with one set of metadata, or the
split sizes do not match the heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.compiler.types import tensor_type
from fusegraph.ops.kv_cache import KVCacheStoreOp
from fusegraph.ops.rope_split_store_chain import UnfusedChain
from fusegraph.ops.shape import ReshapeOp
from fusegraph.passes.patterns import GuardedPattern, NoMatch, NotCandidate, apply_patterns, current_report
from fusegraph.passes.rope_split_store_match import insertion_point, match_chain


@dataclass
class _Match:
    chain: UnfusedChain
    insert_before: Operation


class FuseRopeSplitStorePattern(GuardedPattern[_Match]):
    """The value store of a canonical unfused chain -> fg.rope_split_store"""

    anchor = KVCacheStoreOp
    counter = "fused"

    def match(self, op: KVCacheStoreOp) -> _Match | NoMatch:
        if op.key_or_value != 1:
            return NotCandidate("a key store (the chain is matched at its value store)")
        chain = match_chain(op)
        if isinstance(chain, NoMatch):
            return chain
        return _Match(chain, insertion_point(chain))

    def rewrite(self, match: _Match, rewriter: PatternRewriter) -> None:
        chain, fused = match.chain, match.chain.fused()
        rewriter.insert(fused, InsertPoint.before(match.insert_before))
        if chain.q_out is not None:
            rewriter.replace_all_uses_with(chain.q_out.result, fused.q_out)
        elif chain.q_rope.result.first_use is not None:
            # reshape-free form: the q rope's users want [T, H, D]
            q3 = ReshapeOp(fused.q_out, shape=tensor_type(chain.q_rope.result).shape)
            rewriter.insert(q3, InsertPoint.after(fused))
            rewriter.replace_all_uses_with(chain.q_rope.result, q3.result)
        rewriter.replace_all_uses_with(chain.kv, fused.kv_out)
        for dead in reversed(chain.ops()):
            rewriter.erase(dead)


@dataclass(frozen=True)
class FuseRopeSplitStore(ModulePass):
    """split -> rope(q), rope(k) -> store(k), store(v)  ==>  fg.rope_split_store"""

    name = "fuse-rope-split-store"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("fused", "skipped")
        apply_patterns(op, [FuseRopeSplitStorePattern(report)])
