"""The unfused form of `fg.rope_split_store`, defined once (docs/internals.md prints it): split
qkv into q, k, v; reshape each to `[T, heads, D]`; rope q and k; store k, then v on the buffer
version the k store returned; reshape q back to `[T, H·D]`.

`UnfusedChain.build` constructs it (the attention layer's unfused path, through `emit`, and
`unfuse-rope-split-store`, through `UnfusedChain.of(fused_op)`); `passes/rope_split_store_match.py`
finds one in the IR and `UnfusedChain.fused()` is the one op it equals (`fuse-rope-split-store`).

Example:
    >>> chain = UnfusedChain.build(qkv, ro, freqs, kv, lens, lookup, layer_idx=0, interleaved=False,
    ...                            n_heads=4, n_kv_heads=2, head_dim=16, add=emit)
    >>> q, kv = TensorValue(chain.q), BufferValue(chain.kv)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.opbase import Operand, to_ssa
from fusegraph.compiler.types import tensor_type
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._rope_math import RopeVariant
from fusegraph.ops.kv_cache import KVCacheStoreOp
from fusegraph.ops.rope import RopeOp
from fusegraph.ops.rope_split_store import RopeSplitStoreOp
from fusegraph.ops.shape import ReshapeOp, SplitOp

#: A transform of the `[T, heads, D]` q and k between the reshapes and the ropes (the
#: attention layer's per-head q/k norms); the chain is canonical only without one.
QKTransform = Callable[[TensorValue, TensorValue], tuple[Operand, Operand]]
OpT = TypeVar("OpT", bound=Operation)


@dataclass
class UnfusedChain:
    """The ops of one unfused rope-split-store chain (the module docstring), by role."""

    split: SplitOp
    q_reshape: ReshapeOp
    k_reshape: ReshapeOp
    v_reshape: ReshapeOp
    q_rope: RopeOp
    k_rope: RopeOp
    k_store: KVCacheStoreOp
    v_store: KVCacheStoreOp
    q_out: ReshapeOp | None  # None: reshape-free form (the q rope's users take [T, H, D])

    @property
    def q(self) -> SSAValue:
        """The chain's q output: `[T, H·D]`, or `[T, H, D]` in the reshape-free form."""
        return self.q_rope.result if self.q_out is None else self.q_out.result

    @property
    def kv(self) -> SSAValue:
        """The chain's kv_blocks output (the value store's)."""
        return self.v_store.result

    def ops(self) -> list[Operation]:
        """Every op, each after the ops it uses (program order; reversed: the erase order)."""
        q_out: list[Operation] = [] if self.q_out is None else [self.q_out]
        return [self.split, self.q_reshape, self.k_reshape, self.v_reshape, self.q_rope, self.k_rope,
                self.k_store, self.v_store, *q_out]  # fmt: skip

    def fused(self) -> RopeSplitStoreOp:
        """The one `fg.rope_split_store` this chain equals (heads from the static q, k reshapes)."""
        (_, h, d), (_, hk, _) = (tensor_type(r.result).shape for r in (self.q_reshape, self.k_reshape))
        s, rope = self.k_store, self.q_rope
        return RopeSplitStoreOp(
            self.split.input, s.input_row_offsets, rope.freqs_cis, s.kv_blocks, s.cache_lengths,
            s.lookup_table, layer_idx=s.layer_idx, interleaved=rope.interleaved, n_heads=int(h),
            n_kv_heads=int(hk), head_dim=int(d), variant=rope.variant,
        )  # fmt: skip

    @staticmethod
    def of(op: RopeSplitStoreOp) -> UnfusedChain:
        """The chain equal to `op` (not inserted anywhere)."""
        return UnfusedChain.build(
            op.qkv, op.input_row_offsets, op.freqs_cis, op.kv_blocks, op.cache_lengths, op.lookup_table,
            layer_idx=op.layer_idx, interleaved=op.interleaved, n_heads=op.n_heads,
            n_kv_heads=op.n_kv_heads, head_dim=op.head_dim, variant=op.variant,
        )  # fmt: skip

    @staticmethod
    def build(
        qkv: Operand,
        input_row_offsets: Operand,
        freqs_cis: Operand,
        kv_blocks: Operand,
        cache_lengths: Operand,
        lookup_table: Operand,
        *,
        layer_idx: int,
        interleaved: bool,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        variant: RopeVariant | None = None,
        add: Callable[[Operation], object] | None = None,
        qk_transform: QKTransform | None = None,
    ) -> UnfusedChain:
        """Construct the chain from `fg.rope_split_store`'s operands and attributes (as for
        `ops.rope_split_store`); `chain.q` and `chain.kv` are what the fused op returns.

        Args:
            add: called with each op once constructed, in program order (`emit` appends it to
                the graph being built); None leaves the ops detached (for a pass's rewriter).
            qk_transform: applied to the reshaped q and k before the ropes.
        """
        t = tensor_type(to_ssa(qkv)).shape[0]

        def new(op: OpT) -> OpT:
            if add is not None:
                add(op)
            return op

        split = new(SplitOp(qkv, sizes=[n * head_dim for n in (n_heads, n_kv_heads, n_kv_heads)], axis=1))
        q3, k3, v3 = (
            new(ReshapeOp(piece, shape=[t, n, head_dim]))
            for piece, n in zip(split.outputs, (n_heads, n_kv_heads, n_kv_heads), strict=True)
        )
        q_in: Operand = q3.result
        k_in: Operand = k3.result
        if qk_transform is not None:
            q_in, k_in = qk_transform(TensorValue(q3.result), TensorValue(k3.result))
        rope_args = (input_row_offsets, cache_lengths, freqs_cis)
        q_rope, k_rope = (
            new(RopeOp(x, *rope_args, interleaved=interleaved, variant=variant)) for x in (q_in, k_in)
        )
        meta = (input_row_offsets, cache_lengths, lookup_table)
        k_store = new(KVCacheStoreOp(kv_blocks, k_rope.result, *meta, layer_idx=layer_idx, key_or_value=0))
        v_store = new(KVCacheStoreOp(k_store.result, v3.result, *meta, layer_idx=layer_idx, key_or_value=1))
        q_out = new(ReshapeOp(q_rope.result, shape=[t, n_heads * head_dim]))
        return UnfusedChain(split, q3, k3, v3, q_rope, k_rope, k_store, v_store, q_out)
