"""fg.rope_split_store: shape rules; fused == split -> rope -> store -> store on the q output
and on every byte of kv_blocks; the reference from the math; custom == decomposed."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import fusegraph
from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.compiler.lowering.fx import to_fx
from fusegraph.ops.attention import paged_attention_decomposed
from fusegraph.ops.rope_split_store import RopeSplitStoreOp, rope_split_store_decomposed
from tests.ops.paged_reference import Mode, freqs_table, make_step, only_op, rope_reference, write_reference

CPU = DeviceRef.CPU()
F32, U32 = DType.float32, DType.uint32
H, HKV, D, LAYERS, PAGE, BLOCKS = 4, 2, 8, 2, 4, 16


def _types(width: int = (H + 2 * HKV) * D, kv_heads: int = HKV) -> list:
    return [
        TensorType(F32, ["total_seq_len", width], CPU),
        TensorType(U32, ["batch_plus_1"], CPU),
        TensorType(F32, [64, D], CPU),
        BufferType(F32, [BLOCKS, 2, LAYERS, PAGE, kv_heads, D], CPU),
        TensorType(U32, ["batch"], CPU),
        TensorType(U32, ["batch", "max_pages"], CPU),
    ]


def _fused(interleaved: bool, layer_idx: int = 1, **kw) -> Graph:
    with Graph("fused", input_types=_types(**kw)) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        q, _ = ops.rope_split_store(
            qkv, ro, freqs, kv, lens, lookup, layer_idx=layer_idx, interleaved=interleaved,
            n_heads=H, n_kv_heads=HKV, head_dim=D,
        )  # fmt: skip
        g.output(q)
    return g


def _unfused(interleaved: bool, layer_idx: int = 1) -> Graph:
    with Graph("unfused", input_types=_types()) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        q, k, v = (
            t.reshape(["total_seq_len", -1, D]) for t in ops.split(qkv, [H * D, HKV * D, HKV * D], axis=1)
        )
        q = ops.rope(q, ro, lens, freqs, interleaved=interleaved)
        k = ops.rope(k, ro, lens, freqs, interleaved=interleaved)
        kv = ops.kv_cache_store(kv, k, ro, lens, lookup, layer_idx=layer_idx, key_or_value=0)
        kv = ops.kv_cache_store(kv, v, ro, lens, lookup, layer_idx=layer_idx, key_or_value=1)
        g.output(q.reshape(["total_seq_len", H * D]))
    return g


# --- shape rules ------------------------------------------------------------------------
def test_rope_split_store__result_types() -> None:
    g = _fused(False)
    op = only_op(g, "fg.rope_split_store")
    assert isinstance(op, RopeSplitStoreOp)
    assert op.results[0].type == TensorType(F32, ["total_seq_len", H * D], CPU)
    assert op.results[1].type == _types()[3]
    assert (op.layer_idx, op.interleaved, op.n_heads, op.n_kv_heads, op.head_dim) == (1, False, H, HKV, D)


def test_rope_split_store__refuses_qkv_of_wrong_width() -> None:
    with pytest.raises(
        ValueError, match=r"qkv dim 1 \(60\) != \(n_heads \+ 2\*n_kv_heads\) \* head_dim = .* = 64"
    ):
        _fused(False, width=60)


def test_rope_split_store__refuses_cache_with_other_kv_heads() -> None:
    with pytest.raises(ValueError, match=r"kv_blocks \[n_kv_heads, head_dim\] = \[4, 8\] != \[2, 8\]"):
        _fused(False, kv_heads=4)


def test_rope_split_store__refuses_layer_past_num_layers() -> None:
    with pytest.raises(ValueError, match="fg.rope_split_store: layer_idx must be in 0..2-1, got layer_idx=5"):
        _fused(False, layer_idx=5)


# --- numerics ---------------------------------------------------------------------------
def _inputs(seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    step = make_step([0, 5, 2], [6, 1, 3], page_size=PAGE, num_blocks=BLOCKS)
    qkv = torch.randn(step.total, (H + 2 * HKV) * D)
    kv = torch.randn(BLOCKS, 2, LAYERS, PAGE, HKV, D)  # non-zero: untouched bytes must stay
    return step, qkv, kv


@pytest.mark.parametrize("interleaved", [True, False])
def test_rope_split_store__fused_equals_unfused_on_q_and_whole_cache(interleaved: bool) -> None:
    step, qkv, kv = _inputs()
    freqs, meta = freqs_table(64, D), step.metadata()
    kv_fused, kv_unfused = kv.clone(), kv.clone()
    (q_fused,) = fusegraph.compile(_fused(interleaved), backend="eager")(
        qkv, meta[0], freqs, kv_fused, *meta[1:]
    )
    (q_unfused,) = fusegraph.compile(_unfused(interleaved), backend="eager", pipeline=None)(
        qkv, meta[0], freqs, kv_unfused, *meta[1:]
    )
    assert torch.equal(q_fused, q_unfused)
    assert torch.equal(kv_fused, kv_unfused)
    assert not torch.equal(kv_fused, kv)


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
@pytest.mark.parametrize("interleaved", [True, False])
def test_rope_split_store__matches_reference_from_the_math(interleaved: bool, mode: Mode) -> None:
    step, qkv, kv = _inputs(1)
    op = only_op(_fused(interleaved), "fg.rope_split_store")
    ro, lens, lookup = step.metadata()
    q, kv_out = get_torch_impl(op)(
        op, qkv, ro, freqs_table(64, D), kv, lens, lookup, ctx=LoweringContext(mode=mode)
    )
    t, positions = step.total, [p for _, p in step.rows()]
    q_ref, k_ref, v_ref = torch.split(qkv, [H * D, HKV * D, HKV * D], dim=1)
    want_q = rope_reference(q_ref.reshape(t, H, D), positions, interleaved=interleaved).reshape(t, H * D)
    torch.testing.assert_close(q.to(torch.float64), want_q, rtol=1e-5, atol=1e-5)
    k_rot = rope_reference(k_ref.reshape(t, HKV, D), positions, interleaved=interleaved).to(torch.float32)
    want_kv = write_reference(write_reference(kv, k_rot, step, 1, 0), v_ref.reshape(t, HKV, D), step, 1, 1)
    torch.testing.assert_close(kv_out, want_kv, rtol=1e-5, atol=1e-5)
    assert torch.equal(kv_out[:, :, 0], kv[:, :, 0])  # the other layer is untouched


def test_rope_split_store__inplace_returns_the_callers_buffer() -> None:
    step, qkv, kv = _inputs(2)
    op = only_op(_fused(False), "fg.rope_split_store")
    ro, lens, lookup = step.metadata()
    args = (qkv, ro, freqs_table(64, D), kv, lens, lookup)
    want_q, want_kv = get_torch_impl(op)(op, *args, ctx=LoweringContext(inplace=False))
    q, kv_out = get_torch_impl(op)(op, *args, ctx=LoweringContext(inplace=True))
    assert kv_out is kv
    assert torch.equal(q, want_q) and torch.equal(kv, want_kv)


def test_rope_split_store__refuses_overflow_before_writing() -> None:
    step, qkv, kv = _inputs(3)
    ro, lens, lookup = step.metadata()
    lookup[2, 1:] = 2**32 - 1  # sequence 2 keeps one page of 4: positions 2..4 need two
    before = kv.clone()
    with pytest.raises(
        ValueError, match="rope_split_store_: sequence 2 would write position 4, past its capacity"
    ):
        torch.ops.fusegraph.rope_split_store_(
            qkv, ro, freqs_table(64, D), kv, lens, lookup, 1, False, H, HKV, D
        )
    assert torch.equal(kv, before)


def test_rope_split_store__custom_ops_pass_opcheck() -> None:
    step, qkv, kv = _inputs(4)
    ro, lens, lookup = step.metadata()
    args = (qkv, ro, freqs_table(64, D), kv, lens, lookup, 1, True, H, HKV, D)
    torch.library.opcheck(torch.ops.fusegraph.rope_split_store.default, args)
    torch.library.opcheck(torch.ops.fusegraph.rope_split_store_.default, (*args[:3], kv.clone(), *args[4:]))


def test_rope_split_store__decomposed_layer_traces_symbolically_and_reruns_at_other_sizes() -> None:
    step, qkv, kv = _inputs(5)
    freqs = freqs_table(64, D)

    def layer(qkv, ro, freqs, kv, lens, lookup):
        q, kv = rope_split_store_decomposed(qkv, ro, freqs, kv, lens, lookup, 1, False, H, HKV, D)
        return paged_attention_decomposed(q.reshape(-1, H, D), ro, kv, lens, lookup, 1, 0.3, None), kv

    gm = make_fx(layer, tracing_mode="symbolic")(qkv, step.metadata()[0], freqs, kv, *step.metadata()[1:])
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert "aten.index.Tensor" not in targets and "aten.index_put_.default" not in targets
    step2 = make_step([3, 0], [1, 9], page_size=PAGE, num_blocks=BLOCKS, seed=7)
    qkv2 = torch.randn(step2.total, (H + 2 * HKV) * D)
    ro2, lens2, lookup2 = step2.metadata()
    got = gm(qkv2, ro2, freqs, kv, lens2, lookup2)
    want = layer(qkv2, ro2, freqs, kv, lens2, lookup2)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_rope_split_store__functional_fx_lowering_returns_the_next_cache_version() -> None:
    step, qkv, kv = _inputs(6)
    ro, lens, lookup = step.metadata()
    freqs = freqs_table(64, D)
    outs = to_fx(_fused(True), mode="decomposed")(qkv, ro, freqs, kv, lens, lookup)
    ref_q, ref_kv = torch.ops.fusegraph.rope_split_store(qkv, ro, freqs, kv, lens, lookup, 1, True, H, HKV, D)
    assert torch.equal(outs[0], ref_q) and torch.equal(outs[-1], ref_kv)


def test_rope_split_store__layer_compiles_with_iree_and_matches_eager_at_two_sizes() -> None:
    pytest.importorskip("iree.compiler")
    pytest.importorskip("torch_mlir")
    with Graph("layer", input_types=_types()) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        q, kv = ops.rope_split_store(
            qkv,
            ro,
            freqs,
            kv,
            lens,
            lookup,
            layer_idx=1,
            interleaved=False,
            n_heads=H,
            n_kv_heads=HKV,
            head_dim=D,
        )
        q = q.reshape(["total_seq_len", H, D])
        g.output(ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=1, scale=0.3, sliding_window=6))
    eager, iree = fusegraph.compile(g, backend="eager"), fusegraph.compile(g, backend="iree")
    for seed, (lengths, tokens) in enumerate([([0, 5, 2], [6, 1, 3]), ([3, 0], [1, 9])]):
        step = make_step(lengths, tokens, page_size=PAGE, num_blocks=BLOCKS, seed=seed)
        qkv_t, kv_t = torch.randn(step.total, (H + 2 * HKV) * D), torch.randn(BLOCKS, 2, LAYERS, PAGE, HKV, D)
        ro_t, lens_t, lookup_t = step.metadata()
        kv_eager, kv_iree = kv_t.clone(), kv_t.clone()
        (want,) = eager(qkv_t, ro_t, freqs_table(64, D), kv_eager, lens_t, lookup_t)
        (got,) = iree(qkv_t, ro_t, freqs_table(64, D), kv_iree, lens_t, lookup_t)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kv_iree, kv_eager, rtol=1e-5, atol=1e-5)
