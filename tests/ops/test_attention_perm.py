"""fg.attention.paged with `perm`: the `[T, H·D]` view of the output column-permuted, against dense causal
attention over the K/V gathered from the cache by hand, then gathered by the math (`out[:, j] = attn[:, perm[j]]`)."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

import fusegraph
from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.dialect import parse_module
from fusegraph.ops.attention import PagedAttentionOp
from tests.ops.paged_reference import Mode, dense_attention, make_step, only_op, read_reference, u32

CPU = DeviceRef.CPU()
F32, U32, I32 = DType.float32, DType.uint32, DType.int32
H, HKV, D = 4, 2, 8


def _build(perm_type: TensorType | None, q_heads: int | str = H, head_dim: int | str = D) -> Graph:
    types: list[TensorType | BufferType] = [
        TensorType(F32, ["total_seq_len", q_heads, head_dim], CPU),
        TensorType(U32, ["batch_plus_1"], CPU),
        BufferType(F32, [16, 2, 2, 4, HKV, D], CPU),
        TensorType(U32, ["batch"], CPU),
        TensorType(U32, ["batch", "max_pages"], CPU),
    ]
    with Graph("attn_perm", input_types=types + ([perm_type] if perm_type else [])) as g:
        q, ro, kv, lens, lookup, *perm = g.inputs
        g.output(
            ops.paged_attention(
                q, ro, kv, lens, lookup, layer_idx=1, scale=0.3, perm=perm[0] if perm else None
            )
        )
    return g


# --- shape rules ------------------------------------------------------------------------
def test_attention_perm__prints_and_parses_back() -> None:
    g = _build(TensorType(I32, [H * D], CPU))
    op = only_op(g, "fg.attention.paged")
    assert isinstance(op, PagedAttentionOp) and op.perm is not None
    text = str(g.module)
    assert "%4 perm %5 {" in text and "perm !fg.tensor<[32], i32, cpu> ->" in text, text
    (again,) = [o for o in parse_module(text).walk() if isinstance(o, PagedAttentionOp)]
    assert again.perm is not None and again.perm.type == op.perm.type


@pytest.mark.parametrize(
    ("perm_type", "message"),
    [
        (TensorType(DType.int64, [H * D], CPU), r"fg.attention.paged: perm dtype"),
        (TensorType(I32, [H * D - 1], CPU), r"fg.attention.paged: perm dim 0 \(31\) != 32"),
        (TensorType(I32, [H, D], CPU), r"fg.attention.paged: perm .*rank"),
    ],
    ids=["int64", "short", "rank2"],
)
def test_attention_perm__refuses_a_perm_not_int32_of_heads_times_dim(
    perm_type: TensorType, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _build(perm_type)


def test_attention_perm__refuses_dynamic_heads() -> None:
    with pytest.raises(ValueError, match=r"fg.attention.paged: perm needs static q heads and head dim"):
        _build(TensorType(I32, [H * D], CPU), q_heads="h")


# --- numerics ---------------------------------------------------------------------------
def _run(perm: torch.Tensor, mode: Mode | Literal["iree"]) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the op computes with `perm`: its torch impl, or the graph compiled by IREE for the CPU; the reference:
    dense attention per sequence, then the perm gather)."""
    step = make_step([5, 0, 2], [1, 6, 3], page_size=4, num_blocks=16)
    torch.manual_seed(3)
    kv = torch.randn(16, 2, 2, 4, HKV, D)
    q = torch.randn(step.total, H, D)
    graph = _build(TensorType(I32, [H * D], CPU))
    op = only_op(graph, "fg.attention.paged")
    ro, lens, lookup = step.metadata()
    if mode == "iree":
        (got,) = fusegraph.compile(graph, backend="iree", device="cpu", weights={})(
            q, ro, kv, lens, lookup, perm
        )
    else:
        got = get_torch_impl(op)(op, q, ro, kv, lens, lookup, perm, ctx=LoweringContext(mode=mode))
    want = torch.empty(step.total, H, D, dtype=torch.float64)
    for b, (cached, new) in enumerate(zip(step.cache_lengths, step.tokens, strict=True)):
        k, v = (read_reference(kv, step, b, cached + new, 1, which) for which in (0, 1))
        rows = slice(step.row_offsets[b], step.row_offsets[b + 1])
        want[rows] = dense_attention(q[rows], k, v, cached, 0.3, None)
    flat = want.reshape(step.total, H * D)
    gathered = torch.stack([flat[:, int(p)] for p in perm], dim=1)  # column j is column perm[j]
    return got, gathered.reshape(step.total, H, D)


@pytest.mark.parametrize("mode", ["custom", "decomposed", "iree"])
def test_attention_perm__output_columns_are_gathered_through_perm(mode: Mode) -> None:
    if mode == "iree":
        pytest.importorskip("iree.compiler")
        pytest.importorskip("torch_mlir")
    perm = torch.randperm(H * D, generator=torch.Generator().manual_seed(7)).to(torch.int32)
    got, want = _run(perm, mode)
    torch.testing.assert_close(got.to(torch.float64), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["custom", "decomposed", "iree"])
@pytest.mark.parametrize(
    ("at", "value", "message"), [(3, 32, r"perm\[3\] = 32"), (5, 0, r"perm\[\d+\] = perm\[5\] = 0")]
)
def test_attention_perm__refuses_a_perm_that_is_not_a_permutation(
    at: int, value: int, message: str, mode: Mode
) -> None:
    """Every path refuses, IREE too (its index_select would read 0 for an entry out of range)."""
    if mode == "iree":
        pytest.importorskip("iree.compiler")
        pytest.importorskip("torch_mlir")
    perm = torch.arange(H * D, dtype=torch.int32)
    perm[at] = value
    with pytest.raises(
        ValueError, match=rf"^fg.attention.paged: perm must be a permutation of 0..31, got {message}"
    ):
        _run(perm, mode)


def test_attention_perm__custom_op_refuses_a_perm_of_the_wrong_length() -> None:
    step = make_step([2, 0], [1, 3], page_size=2, num_blocks=12)
    args = (torch.randn(4, 4, 8), u32(step.row_offsets), torch.randn(12, 2, 1, 2, 2, 8))
    meta = (u32(step.cache_lengths), u32(step.lookup))
    with pytest.raises(
        ValueError, match=r"fg.attention.paged: perm must be int32 \[32\] .*got torch.int32 \[31\]"
    ):
        torch.ops.fusegraph.paged_attention(*args, *meta, 0, 0.5, None, torch.arange(31, dtype=torch.int32))


def test_attention_perm__custom_op_passes_opcheck() -> None:
    step = make_step([2, 0], [1, 3], page_size=2, num_blocks=12)
    args = (torch.randn(4, 4, 8), u32(step.row_offsets), torch.randn(12, 2, 1, 2, 2, 8))
    meta = (u32(step.cache_lengths), u32(step.lookup))
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1)).to(torch.int32)
    torch.library.opcheck(torch.ops.fusegraph.paged_attention.default, (*args, *meta, 0, 0.5, None, perm))
