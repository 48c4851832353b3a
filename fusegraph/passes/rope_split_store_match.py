"""Matching the canonical unfused rope-split-store chain (docs/internals.md), guard by guard.

`match_chain(value_store)` walks back from the value store to the split, checking every
guard before anything is touched, and returns the `UnfusedChain` (the one definition of the
chain, `ops/rope_split_store_chain.py`) or the first reason it failed.

The q rope result is the chain's q output. It is matched in two forms:
  * canonical: its one user is `fg.reshape` back to `[T, H*D]` (the layer's q output), which
    the fused op's q result replaces;
  * reshape-free: anything else uses it, typically `fg.attention.paged` after `canonicalize`
    folded that reshape with attention's reshape back to `[T, H, D]`. The rewrite then
    reshapes the fused op's `[T, H*D]` q result to `[T, H, D]` for those users.
"""

from __future__ import annotations

from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.types import tensor_type
from fusegraph.ops.kv_cache import KVCacheStoreOp
from fusegraph.ops.rope import RopeOp
from fusegraph.ops.rope_split_store_chain import UnfusedChain
from fusegraph.ops.shape import ReshapeOp, SplitOp
from fusegraph.passes.patterns import (
    NoMatch,
    OpT,
    block_index,
    defined_by,
    no_match,
    num_uses,
    single_user,
    users,
)


def insertion_point(chain: UnfusedChain) -> Operation:
    """Where the fused op goes: before the first op that produces one of its results or, in
    the reshape-free form, uses the q rope result."""
    q_side: list[Operation] = [chain.q_out] if chain.q_out is not None else users(chain.q_rope.result)
    first: Operation = min([*q_side, chain.v_store], key=block_index)
    return first


def match_chain(v_store: KVCacheStoreOp) -> UnfusedChain | NoMatch:
    """The chain whose value store is `v_store`, or why there is none."""
    k_store = defined_by(v_store.kv_blocks, KVCacheStoreOp, "value store's kv_blocks")
    if isinstance(k_store, NoMatch):
        return no_match(f"stores aren't chained: {k_store}")
    if (reason := _check_stores(k_store, v_store)) is not None:
        return reason
    if isinstance(k_rope := defined_by(k_store.x, RopeOp, "stored key"), NoMatch):
        return k_rope
    if isinstance(v_reshape := defined_by(v_store.x, ReshapeOp, "stored value"), NoMatch):
        return v_reshape
    if isinstance(k_reshape := defined_by(k_rope.x, ReshapeOp, "k rope input"), NoMatch):
        return k_reshape
    split = defined_by(k_reshape.input, SplitOp, "k reshape input")
    if isinstance(split, NoMatch):
        return split
    rest = _match_q_side(split)
    if isinstance(rest, NoMatch):
        return rest
    q_reshape, q_rope, q_out = rest
    group = UnfusedChain(split, q_reshape, k_reshape, v_reshape, q_rope, k_rope, k_store, v_store, q_out)
    for check in (_check_single_use, _check_split, _check_ropes, _check_operands_dominate):
        if (reason := check(group)) is not None:
            return reason
    return group


def _check_stores(k_store: KVCacheStoreOp, v_store: KVCacheStoreOp) -> NoMatch | None:
    if k_store.key_or_value == v_store.key_or_value:
        return no_match(f"both stores have key_or_value={k_store.key_or_value}")
    if k_store.layer_idx != v_store.layer_idx:
        return no_match(f"stores target different layers ({k_store.layer_idx} vs {v_store.layer_idx})")
    for name in ("input_row_offsets", "cache_lengths", "lookup_table"):
        if getattr(k_store, name) is not getattr(v_store, name):
            return no_match(f"stores use different {name}")
    if (n := num_uses(k_store.result)) != 1:
        return no_match(f"key store result has {n} users")
    return None


def _match_q_side(split: SplitOp) -> tuple[ReshapeOp, RopeOp, ReshapeOp | None] | NoMatch:
    if len(split.outputs) != 3:
        return no_match(f"split has {len(split.outputs)} results, expected 3 (q, k, v)")
    if isinstance(q_reshape := _sole_user(split.outputs[0], ReshapeOp, "split result 0"), NoMatch):
        return q_reshape
    if isinstance(q_rope := _sole_user(q_reshape.result, RopeOp, "q reshape result"), NoMatch):
        return q_rope
    return q_reshape, q_rope, _q_output_reshape(q_rope, split)


def _q_output_reshape(q_rope: RopeOp, split: SplitOp) -> ReshapeOp | None:
    """The canonical form's final `fg.reshape` of the q rope result back to the split's q type
    `[T, H*D]`, when it is the rope result's only user; None selects the reshape-free form."""
    user = single_user(q_rope.result, "q rope result")
    if isinstance(user, ReshapeOp) and user.result.type == split.outputs[0].type:
        return user
    return None


def _sole_user(value: SSAValue, cls: type[OpT], what: str) -> OpT | NoMatch:
    user = single_user(value, what)
    if isinstance(user, NoMatch):
        return user
    if not isinstance(user, cls):
        return no_match(f"{what} is used by {user.name}, not {cls.name}")
    return user


def _check_single_use(g: UnfusedChain) -> NoMatch | None:
    values = [(f"split result {i}", r) for i, r in enumerate(g.split.outputs)]
    values += [("k reshape result", g.k_reshape.result), ("v reshape result", g.v_reshape.result)]
    values += [("k rope result", g.k_rope.result)]
    for what, value in values:
        if (n := num_uses(value)) != 1:
            return no_match(f"{what} has {n} users")
    if g.k_reshape.input is not g.split.outputs[1] or g.v_reshape.input is not g.split.outputs[2]:
        return no_match("k and v are not split results 1 and 2")
    return None


def _check_split(g: UnfusedChain) -> NoMatch | None:
    qkv = tensor_type(g.split.input)
    if qkv.rank != 2 or g.split.axis.value.data % 2 != 1:
        return no_match(f"split is not of a [T, (H+2Hkv)*D] tensor along axis 1 (rank {qkv.rank})")
    shapes = [tensor_type(r.result).shape for r in (g.q_reshape, g.k_reshape, g.v_reshape)]
    if any(len(s) != 3 or not all(d.is_static for d in s[1:]) for s in shapes):
        return no_match("q/k/v reshapes are not to [T, heads, D] with static heads and D")
    (_, h, d), (_, hk, dk), (_, hv, dv) = shapes
    if not (d == dk == dv and hk == hv):
        return no_match(f"head shapes disagree: q {h}x{d}, k {hk}x{dk}, v {hv}x{dv}")
    if g.split.sizes != [h * d, hk * d, hk * d]:
        return no_match(
            f"split sizes {[str(s) for s in g.split.sizes]} don't match heads {h}, {hk}, {hk} x {d}"
        )
    return None


def _check_ropes(g: UnfusedChain) -> NoMatch | None:
    q, k, s = g.q_rope, g.k_rope, g.k_store
    if q.interleaved != k.interleaved:
        return no_match(f"ropes disagree on interleaved ({q.interleaved} vs {k.interleaved})")
    if q.variant != k.variant:
        return no_match(f"ropes disagree on the length scaling ({q.variant} vs {k.variant})")
    if q.freqs_cis is not k.freqs_cis:
        return no_match("ropes use different freqs_cis")
    if not (q.input_row_offsets is k.input_row_offsets is s.input_row_offsets):
        return no_match("ropes and stores use different input_row_offsets")
    if not (q.start_pos is k.start_pos is s.cache_lengths):
        return no_match("rope start_pos is not the stores' cache_lengths")
    return None


def _check_operands_dominate(g: UnfusedChain) -> NoMatch | None:
    where = block_index(insertion_point(g))
    s = g.k_store
    meta = (s.kv_blocks, s.input_row_offsets, s.cache_lengths, s.lookup_table)
    for value in (g.split.input, g.k_rope.freqs_cis, *meta):
        owner = value.owner
        if isinstance(owner, Operation) and block_index(owner) >= where:
            return no_match(f"operand from {owner.name} is defined after the fused op's position")
    return None
