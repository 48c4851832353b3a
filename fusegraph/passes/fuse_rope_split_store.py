"""`fuse-rope-split-store`: split -> reshape -> rope(q), rope(k) -> store(k), store(v)  ==>  one op

Matches the canonical unfused form of docs/internals.md, anchored at the value store:
    %q, %k, %v = fg.split %qkv {axis = 1}
    %q3 = fg.reshape %q    %k3 = fg.reshape %k    %v3 = fg.reshape %v
    %qr = fg.rope %q3, %ro, %lens, %freqs {interleaved = false}
    %kr = fg.rope %k3, %ro, %lens, %freqs {interleaved = false}
    %b1 = fg.kv_cache.store %b0, %kr, %ro, %lens, %lookup {key_or_value = 0, layer_idx = 3}
    %b2 = fg.kv_cache.store %b1, %v3, %ro, %lens, %lookup {key_or_value = 1, layer_idx = 3}
    %q2 = fg.reshape %qr                                   // [T, H*D]
After:
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
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.ops.kv_cache import KVCacheStoreOp
from fusegraph.ops.rope_split_store import RopeSplitStoreOp
from fusegraph.ops.shape import ReshapeOp
from fusegraph.passes.patterns import GuardedPattern, NoMatch, NotCandidate, apply_patterns, current_report
from fusegraph.passes.rope_split_store_match import Group, match_chain


@dataclass
class _Match:
    group: Group
    insert_before: Operation


class FuseRopeSplitStorePattern(GuardedPattern[_Match]):
    """The value store of a canonical unfused chain -> fg.rope_split_store"""

    anchor = KVCacheStoreOp
    counter = "fused"

    def match(self, op: KVCacheStoreOp) -> _Match | NoMatch:
        if op.key_or_value != 1:
            return NotCandidate("a key store (the chain is matched at its value store)")
        group = match_chain(op)
        if isinstance(group, NoMatch):
            return group
        return _Match(group, group.insertion_point())

    def rewrite(self, match: _Match, rewriter: PatternRewriter) -> None:
        g = match.group
        fused = RopeSplitStoreOp.build(
            operands=[
                g.split.input,
                g.k_store.input_row_offsets,
                g.k_rope.freqs_cis,
                g.k_store.kv_blocks,
                g.k_store.cache_lengths,
                g.k_store.lookup_table,
            ],  # fmt: skip
            properties={
                "layer_idx": IntegerAttr(g.v_store.layer_idx, i64),
                "interleaved": IntegerAttr.from_bool(g.q_rope.interleaved),
                "n_heads": IntegerAttr(g.n_heads, i64),
                "n_kv_heads": IntegerAttr(g.n_kv_heads, i64),
                "head_dim": IntegerAttr(g.head_dim, i64),
                **g.q_rope.variant.props(),
            },
            result_types=[g.split.outputs[0].type, g.v_store.result.type],
        )
        rewriter.insert(fused, InsertPoint.before(match.insert_before))
        if g.q_out is not None:
            rewriter.replace_all_uses_with(g.q_out.result, fused.q_out)
        elif g.q_rope.result.first_use is not None:
            # reshape-free form: the q rope's users want [T, H, D]
            q3 = ReshapeOp.build(operands=[fused.q_out], result_types=[g.q_rope.result.type])
            rewriter.insert(q3, InsertPoint.after(fused))
            rewriter.replace_all_uses_with(g.q_rope.result, q3.result)
        rewriter.replace_all_uses_with(g.v_store.result, fused.kv_out)
        for dead in g.ops_users_first():
            rewriter.erase(dead)


@dataclass(frozen=True)
class FuseRopeSplitStore(ModulePass):
    """split -> rope(q), rope(k) -> store(k), store(v)  ==>  fg.rope_split_store"""

    name = "fuse-rope-split-store"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("fused", "skipped")
        apply_patterns(op, [FuseRopeSplitStorePattern(report)])
