"""The Triton paged attention (interpreted on the CPU) against dense attention from the math.

The reference gathers each sequence's keys and values position by position through the
lookup table, then runs plain softmax attention in float64 with the causal mask offset by
the cache length (and the sliding window), query head h reading kv head h // (H / Hkv).
"""

from __future__ import annotations

import math

import pytest
import torch

from fusegraph.runtime.kernels.tensor_cache import zeroed_tickets
from tests.kernels._interp import load_interpreted

kernel = load_interpreted("paged_attention", kernel_deps=("pdl",))


def _reference(q, row_offsets, kv, cache_lengths, lookup, *, layer_idx, scale, window):
    t_rows, h, d = q.shape
    hkv, page_size = kv.shape[4], kv.shape[3]
    out = torch.zeros(t_rows, h, d, dtype=torch.float64)
    for b in range(len(row_offsets) - 1):
        lo, hi = int(row_offsets[b]), int(row_offsets[b + 1])
        total = int(cache_lengths[b]) + hi - lo
        pages = [int(lookup[b, p // page_size]) for p in range(total)]
        k = torch.stack([kv[pages[p], 0, layer_idx, p % page_size] for p in range(total)]).double()
        v = torch.stack([kv[pages[p], 1, layer_idx, p % page_size] for p in range(total)]).double()
        for t in range(lo, hi):
            pos = int(cache_lengths[b]) + t - lo
            keys = torch.arange(total)
            visible = keys <= pos
            if window is not None:
                visible &= keys > pos - window
            for head in range(h):
                kvh = head // (h // hkv)
                s = (k[:, kvh] @ q[t, head].double()) * scale
                p = torch.softmax(s.masked_fill(~visible, -math.inf), dim=0)
                out[t, head] = p @ v[:, kvh]
    return out


CASES = [
    # (tokens, cache lengths, h, hkv, d, page_size, dtype, window, block_m)
    ([3, 1, 5], [0, 6, 2], 4, 2, 16, 4, torch.float32, None, None),  # ragged prefill + GQA
    ([1, 1, 1], [9, 0, 20], 4, 1, 16, 1, torch.float16, None, None),  # decode, MQA, page 1
    ([7, 0, 2], [3, 4, 0], 2, 2, 8, 16, torch.float32, 3, 2),  # sliding window, empty seq
    ([4], [17], 6, 2, 16, 16, torch.bfloat16, None, None),  # G = 3 (padded to 4)
    # T = B rows of 2-row and empty sequences, a row a tile, 128 (sequence, kv head) programs: the wide decode plan
    # launches exactly T tiles, and every one is live
    ([2, 0] * 32, [5, 3] * 32, 4, 2, 16, 4, torch.float32, None, 1),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_paged_attention_kernel__matches_dense_attention_over_gathered_cache(case):
    tokens, lens, h, hkv, d, page_size, dtype, window, block_m = case
    torch.manual_seed(sum(tokens) + d)
    num_layers, layer_idx, max_pages = 2, 1, 32 // page_size + 2
    num_blocks = len(tokens) * max_pages
    row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
    kv = torch.randn(num_blocks, 2, num_layers, page_size, hkv, d).to(dtype)
    lookup = torch.randperm(num_blocks).reshape(len(tokens), max_pages).to(torch.uint32)
    q = torch.randn(int(row_offsets[-1]), h, d).to(dtype)
    cache_lengths = torch.tensor(lens, dtype=torch.uint32)
    scale = d**-0.5
    ref = _reference(
        q, row_offsets, kv, cache_lengths, lookup, layer_idx=layer_idx, scale=scale, window=window
    )
    out = kernel.paged_attention_triton(
        q,
        row_offsets.to(torch.int32),
        kv,
        cache_lengths,
        lookup,
        layer_idx=layer_idx,
        scale=scale,
        sliding_window=window,
        block_m=block_m,
    )
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_combine_rows__a_program_an_sm_down_to_one_row() -> None:
    assert [kernel.combine_rows(n, 132) for n in (1, 32, 264, 512, 2048, 8192)] == [1, 1, 2, 2, 8, 16]
    assert kernel.combine_rows(32, 1) == 16  # enough programs at 16 rows: 16


SPLIT_CASES = [
    # (tokens, cache lengths, h, hkv, d, page_size, dtype, window, num_splits)
    ([1, 1, 1], [9, 0, 40], 4, 1, 16, 4, torch.float16, None, 3),  # decode, a split past seq 1's end
    ([1, 1, 1], [9, 0, 40], 4, 2, 16, 4, torch.float32, 5, 4),  # sliding window: empty splits
    ([3, 1, 5], [0, 6, 30], 4, 2, 16, 4, torch.float32, None, 2),  # prefill rows split too
    ([1, 1], [33, 20], 4, 2, 16, 8, torch.float32, None, None),  # default pick (no split at this capacity)
]


@pytest.mark.parametrize(
    "combine",
    ["in-place", None, 1, 16],
    ids=["merged-in-place", "kernel-rows-plan", "kernel-rows-1", "kernel-rows-16"],
)
@pytest.mark.parametrize("case", SPLIT_CASES, ids=[f"split{i}" for i in range(len(SPLIT_CASES))])
def test_paged_attention_kernel__split_kv_matches_dense_attention(case, combine, monkeypatch):
    """Split-KV (flash-decoding): partial softmax states per key slice, merged in place by the split that finishes
    last, or by the combine kernel (its plan's rows a program, or forced to 1 or 16: rows masked past the end)."""
    if isinstance(combine, int):
        monkeypatch.setattr(kernel, "combine_rows", lambda n_rows, sms: combine)
    tokens, lens, h, hkv, d, page_size, dtype, window, splits = case
    torch.manual_seed(sum(lens) + d)
    max_pages = 48 // page_size + 2
    num_blocks = len(tokens) * max_pages
    row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
    kv = torch.randn(num_blocks, 2, 2, page_size, hkv, d).to(dtype)
    lookup = torch.randperm(num_blocks).reshape(len(tokens), max_pages).to(torch.int32)
    q = torch.randn(int(row_offsets[-1]), h, d).to(dtype)
    cache_lengths = torch.tensor(lens, dtype=torch.int32)
    ref = _reference(q, row_offsets, kv, cache_lengths, lookup, layer_idx=1, scale=d**-0.5, window=window)
    out = kernel.paged_attention_triton(q, row_offsets.to(torch.int32), kv, cache_lengths, lookup, layer_idx=1,
                                        scale=d**-0.5, sliding_window=window, num_splits=splits, block_n=16,
                                        merge_in_place=combine == "in-place")  # fmt: skip
    tol = {torch.float32: 1e-5, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_paged_attention_kernel__the_in_place_merge_leaves_its_tickets_at_zero_for_the_next_launch():
    # Two ragged decode steps of different shapes in a row: each tile's last split merges, resets its ticket, and the
    # next launch (more tiles, other splits) counts from zero again; a ticket left over would merge at the wrong
    # arrival, or never.
    for tokens, lens, splits in (([1, 1, 1], [9, 0, 40], 3), ([2, 0, 1, 1], [5, 3, 30, 44], 4)):
        torch.manual_seed(len(tokens))
        page_size, max_pages = 4, 14
        row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
        kv = torch.randn(len(tokens) * max_pages, 2, 2, page_size, 2, 16)
        lookup = torch.randperm(kv.shape[0]).reshape(len(tokens), max_pages).to(torch.int32)
        q = torch.randn(int(row_offsets[-1]), 4, 16)
        lengths = torch.tensor(lens, dtype=torch.int32)
        ref = _reference(q, row_offsets, kv, lengths, lookup, layer_idx=1, scale=0.25, window=None)
        for _ in range(2):
            out = kernel.paged_attention_triton(q, row_offsets.to(torch.int32), kv, lengths, lookup, 1, 0.25,
                                                num_splits=splits, block_n=16, merge_in_place=True)  # fmt: skip
            torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
            assert not zeroed_tickets("paged attention merge", q.device, 1).any()


PERM_CASES = [
    # (tokens, cache lengths, h, hkv, d, dtype, num_splits): the attention kernel stores, or the split merge
    ([3, 1, 5], [0, 6, 2], 4, 2, 16, torch.float32, 1),  # prefill rows, no split
    ([1, 1, 1], [9, 0, 40], 4, 1, 16, torch.float16, 3),  # decode, split keys
]


@pytest.mark.parametrize("merge", [True, False], ids=["merged-in-place", "combine-kernel"])
@pytest.mark.parametrize("apart", [False, True], ids=["stored-permuted", "permuted-after"])
@pytest.mark.parametrize("case", PERM_CASES, ids=["stored-by-attention", "stored-by-the-merge"])
def test_paged_attention_kernel__perm_stores_the_columns_of_t_by_heads_dim_permuted(case, apart, merge):
    """With a perm, `out.reshape(T, H·D)[:, j]` is column `perm[j]` of the dense attention's, whichever kernel
    stores (or permuted after the attention); the perm's values are checked first (a ValueError naming the op and
    the entry)."""
    tokens, lens, h, hkv, d, dtype, splits = case
    torch.manual_seed(sum(lens) + h)
    max_pages, page_size = 14, 4
    row_offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
    kv = torch.randn(len(tokens) * max_pages, 2, 2, page_size, hkv, d).to(dtype)
    lookup = torch.randperm(kv.shape[0]).reshape(len(tokens), max_pages).to(torch.int32)
    q = torch.randn(int(row_offsets[-1]), h, d).to(dtype)
    lengths = torch.tensor(lens, dtype=torch.int32)
    perm = torch.randperm(h * d, generator=torch.Generator().manual_seed(5)).to(torch.int32)
    ref = _reference(q, row_offsets, kv, lengths, lookup, layer_idx=1, scale=d**-0.5, window=None)
    ref = ref.reshape(len(q), h * d)[:, perm.long()].reshape(len(q), h, d)

    def run(p: torch.Tensor) -> torch.Tensor:
        return kernel.paged_attention_triton(q, row_offsets.to(torch.int32), kv, lengths, lookup, 1, d**-0.5, None,
                                             p, num_splits=splits, block_n=16, perm_apart=apart,
                                             merge_in_place=merge)  # fmt: skip

    tol = {torch.float32: 1e-5, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(run(perm).double(), ref, atol=tol, rtol=tol)
    bad = perm.clone()
    bad[7] = -1
    with pytest.raises(
        ValueError, match=r"^fg.attention.paged: perm must be a permutation of 0..63, got perm\[7\] = -1"
    ):
        run(bad)


def test_key_plan__decode_splits_fill_the_sms_and_wide_batches_take_64_key_steps():
    # decode at batch 1..128 (8 kv heads, 132 SMs, a 17-page row): 128-key steps and ~2 programs an SM below 128
    # (sequence, kv head) programs, 64-key steps and ~4 an SM from there; exactly T tiles at one sequence and there
    plans = [kernel.key_plan(b, b, 4, 8, 128, 2176, 132) for b in (1, 4, 16, 32, 64, 128)]
    assert plans == [
        (128, 17, True),
        (128, 9, False),
        (64, 4, True),
        (64, 2, True),
        (64, 1, True),
        (64, 1, True),
    ]
    assert kernel.key_plan(512, 4, 16, 8, 128, 2176, 132) == (64, 1, False)  # prefill: the tiles fill the SMs
    # wide heads take 32-key steps; a short lookup row caps the splits at one key step each
    assert kernel.key_plan(1, 1, 4, 8, 256, 256, 132) == (32, 8, True)


def test_merges_in_place__the_wide_decode_plan_merges_in_place_and_smaller_steps_launch_the_combine():
    # 8 kv heads: from 16 sequences (128 programs) the tile's last split merges; below, and for prefill, the kernel
    assert [kernel.merges_in_place(b, b, 8) for b in (1, 4, 8, 15, 16, 32, 64)] == [False] * 4 + [True] * 3
    assert not kernel.merges_in_place(512, 16, 8)  # prefill rows
    assert kernel.merges_in_place(64, 64, 2)  # 2 kv heads: 128 programs from 64 sequences
