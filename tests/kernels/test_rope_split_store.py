"""The Triton rope-split-store kernel (interpreted on the CPU) against the math.

The reference below is written from the op's definition, element by element in float64:
positions from the ragged layout, rope from the freqs_cis formula, the cache address from
the paged layout. Every byte of the cache is checked: it is poisoned first, and every slot
the step does not own must still hold the poison.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.kernels._interp import load_interpreted

kernel = load_interpreted("rope_split_store", kernel_deps=("pdl",))
POISON = -7777.0


def _reference(qkv, row_offsets, freqs, kv, cache_lengths, lookup, *, layer_idx, interleaved, h, hkv, d):
    kv = kv.clone()
    t_rows = qkv.shape[0]
    x = qkv.to(torch.float64).reshape(t_rows, h + 2 * hkv, d)
    out = x.clone()
    page_size = kv.shape[3]
    for b in range(len(row_offsets) - 1):
        for t in range(int(row_offsets[b]), int(row_offsets[b + 1])):
            pos = int(cache_lengths[b]) + t - int(row_offsets[b])
            for i in range(d // 2):
                c, s = float(freqs[pos, 2 * i]), float(freqs[pos, 2 * i + 1])
                a, bb = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
                x0, x1 = x[t, : h + hkv, a], x[t, : h + hkv, bb]
                out[t, : h + hkv, a] = x0 * c - x1 * s
                out[t, : h + hkv, bb] = x1 * c + x0 * s
            blk, slot = int(lookup[b, pos // page_size]), pos % page_size
            kv[blk, 0, layer_idx, slot] = out[t, h : h + hkv].to(kv.dtype)
            kv[blk, 1, layer_idx, slot] = out[t, h + hkv :].to(kv.dtype)
    return out[:, :h].reshape(t_rows, h * d).to(qkv.dtype), kv


def _freqs(max_pos, d, dtype, theta=10000.0):
    theta = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * theta[None, :]
    return torch.stack([ang.cos(), ang.sin()], dim=-1).reshape(max_pos, d).to(dtype)


CASES = [
    # (tokens per seq, cache lengths, h, hkv, d, page_size, dtype, interleaved, index dtype)
    ([3, 1, 4], [0, 5, 2], 4, 2, 8, 16, torch.float32, False, torch.int64),
    ([3, 1, 4], [0, 5, 2], 4, 2, 8, 1, torch.float32, True, torch.uint32),
    ([2, 0, 3], [7, 0, 1], 4, 1, 16, 4, torch.float16, True, torch.int32),
    ([1, 1], [3, 30], 2, 2, 8, 16, torch.float16, False, torch.uint32),
    ([5], [13], 3, 1, 6, 3, torch.bfloat16, False, torch.int64),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_rope_split_store_kernel__matches_math_on_q_and_every_cache_byte(case):
    tokens, lens, h, hkv, d, page_size, dtype, interleaved, idx_dtype = case
    torch.manual_seed(len(tokens) * 31 + d)
    num_layers, layer_idx, max_pages = 2, 1, 8
    num_blocks = len(tokens) * max_pages + 1
    row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
    t_rows = int(row_offsets[-1])
    qkv = torch.randn(t_rows, (h + 2 * hkv) * d).to(dtype)
    freqs = _freqs(64, d, torch.float32)
    kv = torch.full((num_blocks, 2, num_layers, page_size, hkv, d), POISON, dtype=dtype)
    # Each sequence gets a shuffled set of distinct blocks, so wrong indexing lands elsewhere.
    perm = torch.randperm(num_blocks)[: len(tokens) * max_pages]
    lookup = perm.reshape(len(tokens), max_pages)
    cache_lengths = torch.tensor(lens)

    ref_q, ref_kv = _reference(
        qkv,
        row_offsets,
        freqs,
        kv,
        cache_lengths,
        lookup,
        layer_idx=layer_idx,
        interleaved=interleaved,
        h=h,
        hkv=hkv,
        d=d,
    )
    q = kernel.rope_split_store_triton(
        qkv,
        row_offsets.to(idx_dtype),
        freqs,
        kv,
        cache_lengths.to(idx_dtype),
        lookup.to(idx_dtype),
        layer_idx=layer_idx,
        interleaved=interleaved,
        n_heads=h,
        n_kv_heads=hkv,
        head_dim=d,
    )
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(q, ref_q, atol=tol, rtol=tol)
    torch.testing.assert_close(kv, ref_kv, atol=tol, rtol=tol)
    # Every slot outside this step's positions still holds the poison, bit for bit.
    untouched = ref_kv == POISON
    assert torch.equal(kv[untouched], ref_kv[untouched])


def test_rope_split_store_kernel__rejects_wrong_qkv_width():
    kv = torch.zeros(2, 2, 1, 4, 1, 8)
    with pytest.raises(ValueError, match="qkv width"):
        kernel.rope_split_store_triton(
            torch.zeros(1, 30),
            torch.tensor([0, 1]),
            torch.zeros(4, 8),
            kv,
            torch.tensor([0]),
            torch.tensor([[0]]),
            layer_idx=0,
            interleaved=False,
            n_heads=2,
            n_kv_heads=1,
            head_dim=8,
        )


def _variant_reference(
    qkv, row_offsets, freqs, kv, lens, lookup, *, h, hkv, d, r, interleaved, long_after, ntk
):
    """As `_reference`, for a rotary width r <= d and the length-dependent tables, written from
    the definitions: L = cached + this step's rows; longrope reads row pos + rows/2 when
    L > long_after; dynamic NTK computes cos/sin of pos·base_L^(-2i/r) when L > original."""
    kv = kv.clone()
    x = qkv.to(torch.float64).reshape(qkv.shape[0], h + 2 * hkv, d)
    out = x.clone()
    page_size = kv.shape[3]
    for b in range(len(row_offsets) - 1):
        lo, hi = int(row_offsets[b]), int(row_offsets[b + 1])
        length = int(lens[b]) + hi - lo
        for t in range(lo, hi):
            pos = int(lens[b]) + t - lo
            row = pos + freqs.shape[0] // 2 if long_after is not None and length > long_after else pos
            for i in range(r // 2):
                c, s = float(freqs[row, 2 * i]), float(freqs[row, 2 * i + 1])
                if ntk is not None and length > ntk[2]:
                    theta, factor, original = ntk
                    base = theta * (factor * length / original - (factor - 1)) ** (r / (r - 2))
                    angle = pos * base ** (-2 * i / r)
                    c, s = math.cos(angle), math.sin(angle)
                a, bb = (2 * i, 2 * i + 1) if interleaved else (i, i + r // 2)
                x0, x1 = x[t, : h + hkv, a], x[t, : h + hkv, bb]
                out[t, : h + hkv, a] = x0 * c - x1 * s
                out[t, : h + hkv, bb] = x1 * c + x0 * s
            blk, slot = int(lookup[b, pos // page_size]), pos % page_size
            kv[blk, 0, 0, slot] = out[t, h : h + hkv].to(kv.dtype)
            kv[blk, 1, 0, slot] = out[t, h + hkv :].to(kv.dtype)
    return out[:, :h].reshape(qkv.shape[0], h * d).to(qkv.dtype), kv


VARIANT_CASES = {
    # name: (rotary width, interleaved, long_after, ntk)
    "partial-neox": (6, False, None, None),
    "partial-interleaved": (4, True, None, None),
    "longrope-partial": (8, False, 9, None),
    "dynamic-ntk": (16, False, None, [500.0, 3.0, 9.0]),
    "dynamic-ntk-partial-interleaved": (8, True, None, [500.0, 2.0, 9.0]),
}


@pytest.mark.parametrize("name", list(VARIANT_CASES))
def test_rope_split_store_kernel__partial_rotary_longrope_and_dynamic_ntk(name):
    r, interleaved, long_after, ntk = VARIANT_CASES[name]
    h, hkv, d, page_size, max_pages = 3, 1, 16, 4, 8
    tokens, lens = [4, 1, 7, 2], [0, 10, 5, 6]  # lengths 4, 11, 12, 8: both sides of 9
    torch.manual_seed(r)
    row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
    qkv = torch.randn(int(row_offsets[-1]), (h + 2 * hkv) * d)
    freqs = _freqs(32, r, torch.float32)
    if long_after is not None:  # a second table, of other frequencies
        freqs = torch.cat([freqs, _freqs(32, r, torch.float32, theta=37.0)])
    num_blocks = len(tokens) * max_pages + 1
    kv = torch.full((num_blocks, 2, 1, page_size, hkv, d), POISON)
    lookup = torch.randperm(num_blocks)[: len(tokens) * max_pages].reshape(len(tokens), max_pages)
    cache_lengths = torch.tensor(lens)
    args = (qkv, row_offsets, freqs, kv, cache_lengths, lookup)
    ref_q, ref_kv = _variant_reference(
        *args, h=h, hkv=hkv, d=d, r=r, interleaved=interleaved, long_after=long_after, ntk=ntk
    )
    q = kernel.rope_split_store_triton(
        *args[:3], kv, cache_lengths.to(torch.uint32), lookup, 0, interleaved, h, hkv, d, long_after, ntk
    )
    torch.testing.assert_close(q, ref_q, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(kv, ref_kv, atol=1e-4, rtol=1e-4)
    assert torch.equal(
        q.reshape(-1, h, d)[..., r:], qkv.reshape(-1, h + 2 * hkv, d)[:, :h, r:]
    )  # pass-through
