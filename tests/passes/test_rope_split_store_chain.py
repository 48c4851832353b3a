"""UnfusedChain (ops/rope_split_store_chain.py): the one definition of the unfused form."""

from __future__ import annotations

from typing import Any

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.graph import emit
from fusegraph.compiler.values import TensorValue
from fusegraph.ops.elementwise import NegOp
from fusegraph.ops.rope import RopeVariant
from fusegraph.ops.rope_split_store import RopeSplitStoreOp
from fusegraph.ops.rope_split_store_chain import UnfusedChain

CPU = DeviceRef.CPU()
F32, U32 = DType.float32, DType.uint32
H, HKV, D = 4, 2, 8
INPUTS: list[TensorType | BufferType] = [
    TensorType(F32, ["total_seq_len", (H + 2 * HKV) * D], CPU),
    TensorType(U32, ["batch_plus_1"], CPU),
    TensorType(F32, [128, D], CPU),
    BufferType(F32, [16, 2, 3, 4, HKV, D], CPU),
    TensorType(U32, ["batch"], CPU),
    TensorType(U32, ["batch", "max_pages"], CPU),
]
ATTRS: dict[str, Any] = {"layer_idx": 2, "interleaved": True, "n_heads": H, "n_kv_heads": HKV, "head_dim": D}
UNFUSED = ["fg.split", *["fg.reshape"] * 3, "fg.rope", "fg.rope", "fg.kv_cache.store", "fg.kv_cache.store"]


def test_of_then_fused__gives_back_the_same_op() -> None:
    with Graph("g", input_types=INPUTS) as g:
        q, kv = ops.rope_split_store(*g.inputs, **ATTRS, variant=RopeVariant(long_after=64))
        g.output(q, kv)
    op = next(o for o in g.block.ops if isinstance(o, RopeSplitStoreOp))
    chain = UnfusedChain.of(op)
    assert [o.name for o in chain.ops()] == [*UNFUSED, "fg.reshape"]
    assert (chain.q.type, chain.kv.type) == (op.q_out.type, op.kv_out.type)
    back = chain.fused()
    assert back.properties == op.properties
    assert list(back.operands) == list(op.operands)
    assert [r.type for r in back.results] == [r.type for r in op.results]
    for detached in [back, *reversed(chain.ops())]:
        detached.erase()  # drop their uses of the graph's values
    g.verify()


def test_build__emits_in_program_order_with_the_qk_transform_between_reshapes_and_ropes() -> None:
    def negate(q: TensorValue, k: TensorValue) -> tuple[TensorValue, TensorValue]:
        return ops.neg(q), ops.neg(k)

    with Graph("g", input_types=INPUTS) as g:
        chain = UnfusedChain.build(*g.inputs, **ATTRS, add=emit, qk_transform=negate)
        g.output(TensorValue(chain.q))
    names = [o.name for o in g.block.ops][:-1]  # without func.return
    assert names == [*UNFUSED[:4], "fg.neg", "fg.neg", *UNFUSED[4:], "fg.reshape"]
    assert isinstance(neg := chain.q_rope.x.owner, NegOp) and neg.input is chain.q_reshape.result
    g.verify()
