"""fg.attention.paged: shape rules, and numerics against dense causal attention over the
K/V gathered from the cache by hand."""

from __future__ import annotations

import pytest
import torch

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.ops.attention import PagedAttentionOp
from tests.ops.paged_reference import Mode, Step, dense_attention, make_step, only_op, read_reference, u32

CPU = DeviceRef.CPU()
F32, U32 = DType.float32, DType.uint32


def _types(n_heads: int, kv_shape: tuple[int, ...], head_dim: int | None = None) -> list:
    return [
        TensorType(F32, ["total_seq_len", n_heads, head_dim or kv_shape[-1]], CPU),
        TensorType(U32, ["batch_plus_1"], CPU),
        BufferType(F32, list(kv_shape), CPU),
        TensorType(U32, ["batch"], CPU),
        TensorType(U32, ["batch", "max_pages"], CPU),
    ]


def _build(n_heads=8, kv_shape=(16, 2, 2, 4, 2, 8), head_dim=None, layer_idx=1, **kw) -> Graph:
    with Graph("attn", input_types=_types(n_heads, kv_shape, head_dim)) as g:
        q, ro, kv, lens, lookup = g.inputs
        g.output(
            ops.paged_attention(
                q, ro, kv, lens, lookup, layer_idx=layer_idx, scale=kw.pop("scale", 0.3), **kw
            )
        )
    return g


# --- shape rules ------------------------------------------------------------------------
def test_attention__result_type_is_q_type() -> None:
    g = _build()
    assert g.outputs[0].type == _types(8, (16, 2, 2, 4, 2, 8))[0]
    g.verify()


def test_attention__refuses_heads_not_a_multiple_of_kv_heads() -> None:
    with pytest.raises(
        ValueError, match=r"fg.attention.paged: q n_heads \(3\) must be a multiple of .* \(2\)"
    ):
        _build(n_heads=3)


def test_attention__refuses_other_masks() -> None:
    with pytest.raises(ValueError, match="fg.attention.paged: mask must be one of causal, got 'full'"):
        _build(mask="full")


def test_attention__refuses_empty_sliding_window() -> None:
    with pytest.raises(
        ValueError, match="fg.attention.paged: sliding_window must be >= 1, got sliding_window=0"
    ):
        _build(sliding_window=0)


def test_attention__refuses_head_dim_mismatch() -> None:
    with pytest.raises(
        ValueError, match=r"fg.attention.paged: q head_dim \(16\) != kv_blocks head_dim \(8\)"
    ):
        _build(head_dim=16)


def test_attention__sliding_window_prints_and_reads_back() -> None:
    op = only_op(_build(sliding_window=5), "fg.attention.paged")
    assert isinstance(op, PagedAttentionOp)
    assert (op.sliding_window, op.mask, op.layer_idx, op.scale) == (5, "causal", 1, 0.3)
    op = only_op(_build(), "fg.attention.paged")
    assert isinstance(op, PagedAttentionOp) and op.sliding_window is None


# --- numerics ---------------------------------------------------------------------------
def _check(
    step: Step, n_heads: int, n_kv_heads: int, window: int | None = None, mode: Mode = "custom"
) -> None:
    torch.manual_seed(sum(step.tokens) + n_kv_heads)
    d, layer, scale = 8, 1, 8**-0.5
    kv = torch.randn(24, 2, 2, step.page_size, n_kv_heads, d)  # every slot holds something
    q = torch.randn(step.total, n_heads, d)
    g = _build(n_heads, tuple(kv.shape), layer_idx=layer, scale=scale, sliding_window=window)
    op = only_op(g, "fg.attention.paged")
    ro, lens, lookup = step.metadata()
    got = get_torch_impl(op)(op, q, ro, kv, lens, lookup, ctx=LoweringContext(mode=mode))
    for b, (cached, new) in enumerate(zip(step.cache_lengths, step.tokens)):
        k = read_reference(kv, step, b, cached + new, layer, 0)
        v = read_reference(kv, step, b, cached + new, layer, 1)
        rows = slice(step.row_offsets[b], step.row_offsets[b + 1])
        want = dense_attention(q[rows], k, v, cached, scale, window)
        torch.testing.assert_close(got[rows].to(torch.float64), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(8, 2), (8, 1), (2, 2)], ids=["gqa", "mqa", "mha"])
def test_attention__prefill_matches_dense_causal(n_heads: int, n_kv_heads: int, mode: Mode) -> None:
    _check(make_step([0, 0], [7, 3], page_size=4, num_blocks=24), n_heads, n_kv_heads, mode=mode)


@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(8, 2), (8, 1)], ids=["gqa", "mqa"])
def test_attention__decode_matches_dense_causal(n_heads: int, n_kv_heads: int) -> None:
    _check(make_step([5, 20, 0], [1, 1, 1], page_size=4, num_blocks=24), n_heads, n_kv_heads)


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
def test_attention__mixed_batch_of_1_and_37_token_sequences(mode: Mode) -> None:
    _check(make_step([12, 0, 3], [1, 37, 1], page_size=8, num_blocks=24), 8, 2, mode=mode)


@pytest.mark.parametrize("window", [1, 4])
def test_attention__sliding_window_sees_only_recent_keys(window: int) -> None:
    _check(make_step([6, 0], [3, 9], page_size=4, num_blocks=24), 8, 2, window=window)


def test_attention__page_size_1() -> None:
    _check(make_step([2, 0], [3, 4], page_size=1, num_blocks=24), 4, 2)


def test_attention__custom_op_passes_opcheck() -> None:
    step = make_step([2, 0], [1, 3], page_size=2, num_blocks=12)
    args = (torch.randn(4, 4, 8), u32(step.row_offsets), torch.randn(12, 2, 1, 2, 2, 8))
    meta = (u32(step.cache_lengths), u32(step.lookup))
    for window in (None, 2):
        torch.library.opcheck(torch.ops.fusegraph.paged_attention.default, (*args, *meta, 0, 0.5, window))
