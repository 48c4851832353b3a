"""Triton kernel for `fusegraph::kv_cache_store_`: write new key or value rows into the paged cache.

Program (t, c) copies chunk c of row t of `x [T, Hkv, D]` to
`kv_blocks[lookup_table[b, p // page_size], key_or_value, layer, p % page_size]`, where b is
the sequence owning row t (the number of row_offsets[1:] <= t) and
p = cache_lengths[b] + t - row_offsets[b]. No host sync, so it can be captured in a CUDA graph.

A row whose page is past its lookup row or names a block past num_blocks writes nothing, and
while the cache's write flag is set (`write_flag.py`: the runtime's capacity check found an
overflow in this step) no row writes. The op's torch implementation is where those raise.
"""

# ruff: noqa: N803, N806 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.metadata import as_index
from fusegraph.runtime.kernels.write_flag import flag_for

__all__ = ["kv_cache_store_triton"]


@triton.jit
def _kv_cache_store_kernel(
    x_ptr, ro_ptr, lens_ptr, lut_ptr, kv_ptr, flag_ptr,
    B, layer_idx, key_or_value, page_size, num_blocks, max_pages, stride_xt, stride_xh, stride_lut,
    s_kv0, s_kv1, s_kv2, s_kv3, s_kv4, s_kv5,
    D: tl.constexpr, WIDTH: tl.constexpr, BLOCK: tl.constexpr, BLOCK_B: tl.constexpr, HAS_FLAG: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # element of the row: head i // D, dim i % D
    seqs = tl.arange(0, BLOCK_B)
    count = tl.zeros([BLOCK_B], dtype=tl.int32)
    for start in range(0, B, BLOCK_B):
        idx = start + seqs
        ends = tl.load(ro_ptr + 1 + idx, mask=idx < B, other=0).to(tl.int64)
        count += ((ends <= t) & (idx < B)).to(tl.int32)
    b = tl.minimum(tl.sum(count, axis=0), B - 1)  # rows past row_offsets[B] (refused): the last
    pos = tl.load(lens_ptr + b).to(tl.int64) + t - tl.load(ro_ptr + b).to(tl.int64)
    in_row = pos // page_size < max_pages
    if HAS_FLAG:
        in_row = in_row & (tl.load(flag_ptr) == 0)
    block = tl.load(lut_ptr + b * stride_lut + tl.where(in_row, pos // page_size, 0)).to(tl.int64)
    may_write = in_row & (block < num_blocks)
    head = (i // D).to(tl.int64)
    d = (i % D).to(tl.int64)
    ok = tl.where(may_write, i < WIDTH, False)  # the interpreter cannot broadcast a scalar mask
    value = tl.load(x_ptr + t * stride_xt + head * stride_xh + d, mask=ok, other=0.0)
    dest = (
        block * s_kv0 + key_or_value * s_kv1 + layer_idx * s_kv2 + (pos % page_size) * s_kv3
        + head * s_kv4 + d * s_kv5
    )  # fmt: skip
    tl.store(kv_ptr + dest, value.to(kv_ptr.dtype.element_ty), mask=ok)


def kv_cache_store_triton(
    kv_blocks: torch.Tensor,
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    key_or_value: int,
) -> None:
    """Write `x` (keys if key_or_value == 0, values if 1) into `kv_blocks` in place, one launch.

    Args:
        kv_blocks: `[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`, written in place.
        x: `[T, n_kv_heads, head_dim]` new rows (cast to the cache dtype).
        input_row_offsets: `[B+1]` integer row offsets of the ragged batch.
        cache_lengths: `[B]` tokens already cached per sequence.
        lookup_table: `[B, max_pages]` block ids.
        layer_idx, key_or_value: as on `fg.kv_cache.store`.

    Example:
        >>> kv_cache_store_triton(kv, k, row_offsets, lengths, lookup, layer_idx=0, key_or_value=0)
    """
    rows, n_kv_heads, head_dim = x.shape
    if kv_blocks.shape[4:] != (n_kv_heads, head_dim):
        raise ValueError(
            f"kv_cache_store: kv_blocks {tuple(kv_blocks.shape)} != [.., {n_kv_heads}, {head_dim}] of x"
        )
    if rows == 0 or cache_lengths.shape[0] == 0:  # no sequence owns a row: nothing to write
        return
    if x.stride(2) != 1:
        x = x.contiguous()
    lookup_table = as_index(lookup_table)
    batch = cache_lengths.shape[0]
    width = n_kv_heads * head_dim
    block = min(triton.next_power_of_2(width), 1024)
    flag = flag_for(kv_blocks)
    _kv_cache_store_kernel[(rows, triton.cdiv(width, block))](
        x, as_index(input_row_offsets), as_index(cache_lengths), lookup_table, kv_blocks,
        kv_blocks if flag is None else flag,
        batch, layer_idx, key_or_value, kv_blocks.shape[3], kv_blocks.shape[0], lookup_table.shape[1],
        x.stride(0), x.stride(1), lookup_table.stride(0), *kv_blocks.stride(),
        D=head_dim, WIDTH=width, BLOCK=block,
        BLOCK_B=min(triton.next_power_of_2(max(batch, 1)), 1024), HAS_FLAG=flag is not None,
        num_warps=4,
    )  # fmt: skip
