"""The compiled (not interpreted) Triton rope-split-store kernel on a GPU (skipped without one),
against the op's torch decomposition on the CPU: partial rotary in both layouts, longrope's
two tables, dynamic NTK's per-sequence base; q and every cache byte."""

from __future__ import annotations

import pytest
import torch

from fusegraph.ops.rope_split_store import rope_split_store_decomposed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = {
    # name: (rotary width, interleaved, long_after, ntk, dtype)
    "full-neox-f16": (16, False, None, None, torch.float16),
    "partial-neox": (6, False, None, None, torch.float32),
    "partial-interleaved-bf16": (8, True, None, None, torch.bfloat16),
    "longrope-partial": (8, False, 9, None, torch.float32),
    "dynamic-ntk": (16, False, None, [500.0, 3.0, 9.0], torch.float32),
    "dynamic-ntk-partial-interleaved-f16": (8, True, None, [500.0, 2.0, 9.0], torch.float16),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rope_split_store_cuda__matches_the_decomposition(name):
    from fusegraph.runtime.kernels.rope_split_store import rope_split_store_triton

    r, interleaved, long_after, ntk, dtype = CASES[name]
    h, hkv, d, page_size, max_pages = 4, 2, 16, 4, 8
    tokens, lens = [4, 1, 7, 2], [0, 10, 5, 6]  # lengths 4, 11, 12, 8: both sides of 9
    gen = torch.Generator().manual_seed(r)
    row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()], dtype=torch.uint32)
    qkv = torch.randn(sum(tokens), (h + 2 * hkv) * d, generator=gen).to(dtype)
    tables = 2 if long_after is not None else 1
    freqs = torch.randn(tables * 32, r, generator=gen).clamp(-1, 1)
    num_blocks = len(tokens) * max_pages + 1
    kv = torch.randn(num_blocks, 2, 2, page_size, hkv, d, generator=gen).to(dtype)
    lookup = torch.randperm(num_blocks, generator=gen)[: len(tokens) * max_pages].reshape(len(tokens), -1)
    cache_lengths = torch.tensor(lens, dtype=torch.uint32)
    args = (qkv, row_offsets, freqs, kv, cache_lengths, lookup.to(torch.uint32))
    flags = (1, interleaved, h, hkv, d, long_after, ntk)
    want_q, want_kv = rope_split_store_decomposed(*(args + flags))
    qkv_d, row_offsets_d, freqs_d, kv_d, lengths_d, lookup_d = (a.cuda() for a in args)
    cuda = (qkv_d, row_offsets_d, freqs_d, kv_d, lengths_d, lookup_d)
    got_q = rope_split_store_triton(*(cuda + flags))
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got_q.cpu(), want_q, rtol=tol, atol=tol)
    torch.testing.assert_close(cuda[3].cpu(), want_kv, rtol=tol, atol=tol)
