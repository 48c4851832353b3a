"""`unfuse-rope-split-store`: fg.rope_split_store  ==>  the canonical unfused chain.

The exact inverse of `fuse-rope-split-store`, for testing and for backends without the
fused kernel; it emits the form docs/internals.md pins down.

Before:
    %q2, %b2 = fg.rope_split_store %qkv, %ro, %freqs, %b0, %lens, %lookup
                 {head_dim = 16, interleaved = false, layer_idx = 0, n_heads = 4, n_kv_heads = 2}
After:
    %q, %k, %v = fg.split %qkv {axis = 1}          // [T, 64], [T, 32], [T, 32]
    %q3 = fg.reshape %q    %k3 = fg.reshape %k    %v3 = fg.reshape %v
    %qr = fg.rope %q3, %ro, %lens, %freqs {interleaved = false}
    %kr = fg.rope %k3, %ro, %lens, %freqs {interleaved = false}
    %b1 = fg.kv_cache.store %b0, %kr, %ro, %lens, %lookup {key_or_value = 0, layer_idx = 0}
    %b2 = fg.kv_cache.store %b1, %v3, %ro, %lens, %lookup {key_or_value = 1, layer_idx = 0}
    %q2 = fg.reshape %qr                             // [T, 64]
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter

from fusegraph.compiler.types import TensorType
from fusegraph.ops.kv_cache import KVCacheStoreOp
from fusegraph.ops.rope import RopeOp
from fusegraph.ops.rope_split_store import RopeSplitStoreOp
from fusegraph.ops.shape import ReshapeOp, SplitOp
from fusegraph.passes.patterns import GuardedPattern, NoMatch, apply_patterns, current_report


def _reshape(x: SSAValue, shape: list) -> ReshapeOp:  # type: ignore[type-arg]
    t: TensorType = x.type  # type: ignore[assignment]
    return ReshapeOp.build(operands=[x], result_types=[TensorType(t.dtype, shape, t.device)])


def unfused_chain(op: RopeSplitStoreOp) -> list[Operation]:
    """The canonical unfused ops equivalent to `op`; the last two produce kv_blocks and q."""
    qkv: TensorType = op.qkv.type  # type: ignore[assignment]
    t, h, hk, d = qkv.shape[0], op.n_heads, op.n_kv_heads, op.head_dim
    pieces = [TensorType(qkv.dtype, [t, n * d], qkv.device) for n in (h, hk, hk)]
    split = SplitOp.build(operands=[op.qkv], properties={"axis": IntegerAttr(1, i64)}, result_types=[pieces])
    q3, k3, v3 = (_reshape(r, [t, n, d]) for r, n in zip(split.results, (h, hk, hk), strict=True))
    meta = [op.input_row_offsets, op.cache_lengths, op.freqs_cis]
    flag = {"interleaved": IntegerAttr.from_bool(op.interleaved), **op.variant.props()}
    q_rope, k_rope = (
        RopeOp.build(operands=[x.result, *meta], properties=flag, result_types=[x.result.type])
        for x in (q3, k3)
    )
    stores: list[KVCacheStoreOp] = []
    buffer = op.kv_blocks
    for kv, x in ((0, k_rope.result), (1, v3.result)):
        props = {"layer_idx": IntegerAttr(op.layer_idx, i64), "key_or_value": IntegerAttr(kv, i64)}
        operands = [buffer, x, op.input_row_offsets, op.cache_lengths, op.lookup_table]
        stores.append(KVCacheStoreOp.build(operands=operands, properties=props, result_types=[buffer.type]))
        buffer = stores[-1].result
    q_out = _reshape(q_rope.result, [t, h * d])
    return [split, q3, k3, v3, q_rope, k_rope, stores[0], stores[1], q_out]


class UnfuseRopeSplitStorePattern(GuardedPattern[RopeSplitStoreOp]):
    """fg.rope_split_store -> split, reshapes, two ropes, two stores, reshape"""

    anchor = RopeSplitStoreOp
    counter = "unfused"

    def match(self, op: RopeSplitStoreOp) -> RopeSplitStoreOp | NoMatch:
        return op  # every fused op has an unfused form

    def rewrite(self, match: RopeSplitStoreOp, rewriter: PatternRewriter) -> None:
        chain = unfused_chain(match)
        rewriter.replace(match, chain, [chain[-1].results[0], chain[-2].results[0]])


@dataclass(frozen=True)
class UnfuseRopeSplitStore(ModulePass):
    """fg.rope_split_store  ==>  split -> rope(q), rope(k) -> store(k), store(v)"""

    name = "unfuse-rope-split-store"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("unfused")
        apply_patterns(op, [UnfuseRopeSplitStorePattern(report)])
