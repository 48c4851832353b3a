"""The Triton kv_cache_store kernel and the write flag of both cache-writing kernels
(interpreted on the CPU), against the paged layout written out by hand. Every byte of the
cache is checked: it is poisoned first, and slots the step does not own keep the poison."""

from __future__ import annotations

import pytest
import torch

from tests.kernels._interp import load_interpreted

store = load_interpreted("kv_cache_store")
rope_store = load_interpreted("rope_split_store", kernel_deps=("pdl",))
U32 = torch.uint32
POISON = -7777.0
BLOCKS, LAYERS, PAGE, HKV, D = 6, 2, 4, 2, 8


def _reference(kv, x, offsets, cached, lookup, *, layer_idx, key_or_value):
    kv = kv.clone()
    for b in range(len(offsets) - 1):
        for t in range(offsets[b], offsets[b + 1]):
            pos = cached[b] + t - offsets[b]
            page = pos // PAGE
            if page < len(lookup[b]) and lookup[b][page] < BLOCKS:
                kv[lookup[b][page], key_or_value, layer_idx, pos % PAGE] = x[t].to(kv.dtype)
    return kv


@pytest.mark.parametrize(
    ("tokens", "cached", "lookup", "dtype"),
    [
        ([3, 1, 4], [0, 5, 2], [[0, 1], [2, 3], [4, 5]], torch.float32),
        ([2, 0, 1], [6, 0, 3], [[5, 4], [9, 9], [1, 2]], torch.float16),
        # row 2 of seq 0 is past its lookup row; seq 1 names block 9 of 6: those rows write nothing
        ([3, 1], [6, 0], [[0, 1], [9, 2]], torch.float32),
    ],
    ids=["prefill", "decode_f16", "out_of_range_rows"],
)
@pytest.mark.parametrize("key_or_value", [0, 1])
def test_kv_cache_store_kernel__writes_exactly_the_owned_slots(tokens, cached, lookup, dtype, key_or_value):
    gen = torch.Generator().manual_seed(len(tokens) + key_or_value)
    offsets = [0, *torch.tensor(tokens).cumsum(0).tolist()]
    x = torch.randn(sum(tokens), HKV, D, generator=gen).to(dtype)
    kv = torch.full((BLOCKS, 2, LAYERS, PAGE, HKV, D), POISON, dtype=dtype)
    want = _reference(kv, x, offsets, cached, lookup, layer_idx=1, key_or_value=key_or_value)
    meta = (
        torch.tensor(offsets, dtype=U32),
        torch.tensor(cached, dtype=U32),
        torch.tensor(lookup, dtype=U32),
    )
    store.kv_cache_store_triton(kv, x, *meta, layer_idx=1, key_or_value=key_or_value)
    assert torch.equal(kv, want)
    assert not torch.equal(kv, torch.full_like(kv, POISON))


def test_cache_writing_kernels__write_nothing_while_the_flag_is_set(monkeypatch) -> None:
    flag = torch.tensor([1, 0, 8, 2, -1, BLOCKS, PAGE, 0])
    for module in (store, rope_store):
        monkeypatch.setattr(module, "flag_for", lambda kv: flag)
    ro, cached, lookup = (
        torch.tensor([0, 2], dtype=U32),
        torch.tensor([1], dtype=U32),
        torch.tensor([[3, 4]], dtype=U32),
    )
    kv = torch.full((BLOCKS, 2, LAYERS, PAGE, HKV, D), POISON)
    store.kv_cache_store_triton(kv, torch.randn(2, HKV, D), ro, cached, lookup, layer_idx=0, key_or_value=0)
    qkv = torch.randn(2, (2 + 2 * HKV) * D)
    freqs = torch.randn(16, D)
    q = rope_store.rope_split_store_triton(
        qkv,
        ro,
        freqs,
        kv,
        cached,
        lookup,
        layer_idx=0,
        interleaved=False,
        n_heads=2,
        n_kv_heads=HKV,
        head_dim=D,
    )
    assert q.shape == (2, 2 * D)
    assert torch.equal(kv, torch.full_like(kv, POISON))
    flag.zero_()  # cleared: the same calls write
    store.kv_cache_store_triton(kv, torch.randn(2, HKV, D), ro, cached, lookup, layer_idx=0, key_or_value=0)
    assert not torch.equal(kv, torch.full_like(kv, POISON))
