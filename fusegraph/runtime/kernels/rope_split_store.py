"""Triton kernel for `fg.rope_split_store`: rope + split + paged KV store in one launch.

Each program takes one qkv row `t` and a block of `BLOCK_H` of its `H + 2·Hkv` heads:
    heads [0, H)          q: rope, written to q_out[t]
    heads [H, H+Hkv)      k: rope, written to kv_blocks[blk, 0, layer, slot]
    heads [H+Hkv, H+2Hkv) v: copied to kv_blocks[blk, 1, layer, slot]
where b is the sequence owning row t (the number of row_offsets[1:] <= t), the position is
p = cache_lengths[b] + t - row_offsets[b], blk = lookup_table[b, p // page_size] and
slot = p % page_size.

Rope (freqs_cis row p = [cos θ0·p, sin θ0·p, ..., cos θ(R/2-1)·p, sin θ(R/2-1)·p], R the
rotary width <= D) pairs dim d < R with its partner d' and frequency i:
    interleaved=True:  d' = d ^ 1,               i = d // 2
    interleaved=False: d' = (d + R/2) mod R,     i = d mod R/2
    out[d] = x[d]·cos_i − x[d']·sin_i   for the first of a pair (d even / d < R/2)
    out[d] = x[d]·cos_i + x[d']·sin_i   for the second
and dims d >= R pass through (partial rotary). With L_b = cache_lengths[b] + the sequence's
rows this step: longrope (LONG) reads row p + long_rows when L_b > long_after; dynamic NTK
(DYNAMIC) computes, when L_b > ntk_original_max, θi = base_b^(−2i/R) with
base_b = ntk_theta·(ntk_factor·L_b/ntk_original_max − (ntk_factor − 1))^(R/(R−2)) in fp32.
The partner is loaded a second time from global memory (an L1 hit), which keeps the
kernel free of register shuffles. Arithmetic is fp32; stores round to the output dtype.

Cache writes are refused on the device, with no host sync: a row whose page is past its
lookup row or names a block past num_blocks writes nothing, and while the cache's write flag
is set (`write_flag.py`: the runtime's check refused this step's metadata) no row writes. A
position past the freqs_cis rows reads no table row (the runtime refuses it with the same flag);
the op's torch implementation is where out-of-range positions raise.
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.metadata import as_index
from fusegraph.runtime.kernels.pdl import pdl_enter, triton_pdl
from fusegraph.runtime.kernels.write_flag import flag_for

__all__ = ["rope_split_store_triton"]


@triton.jit
def _sequence_of_row(row_offsets_ptr, t, B, BLOCK_B: tl.constexpr):
    """b such that row_offsets[b] <= t < row_offsets[b+1] (empty sequences skipped); B - 1 for a
    row past row_offsets[B] (row offsets the runtime refuses), so nothing is read past the batch."""
    count = tl.zeros([BLOCK_B], dtype=tl.int32)
    for start in range(0, B, BLOCK_B):
        idx = start + tl.arange(0, BLOCK_B)
        ends = tl.load(row_offsets_ptr + 1 + idx, mask=idx < B, other=0).to(tl.int64)
        count += ((ends <= t) & (idx < B)).to(tl.int32)
    return tl.minimum(tl.sum(count, axis=0), B - 1)


@triton.jit
def _rope_split_store_kernel(
    qkv_ptr,
    row_offsets_ptr,
    freqs_ptr,
    kv_ptr,
    cache_lengths_ptr,
    lookup_ptr,
    q_out_ptr,
    B,
    layer_idx,
    page_size,
    stride_qkv_t,
    stride_freq_p,
    stride_q_t,
    stride_lut_b,
    long_after,
    long_rows,
    ntk_theta,
    ntk_factor,
    ntk_original_max,
    s_kv0,
    s_kv1,
    s_kv2,
    s_kv3,
    s_kv4,
    s_kv5,
    num_blocks,
    max_pages,
    flag_ptr,
    freq_rows,
    H: tl.constexpr,
    HKV: tl.constexpr,
    D: tl.constexpr,
    R: tl.constexpr,
    LONG: tl.constexpr,
    DYNAMIC: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_B: tl.constexpr,
    INTERLEAVED: tl.constexpr,
    HAS_FLAG: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl_enter(PDL)
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # head index in [0, H + 2·HKV)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D

    b = _sequence_of_row(row_offsets_ptr, t, B, BLOCK_B)
    start = tl.load(row_offsets_ptr + b).to(tl.int64)
    cached = tl.load(cache_lengths_ptr + b).to(tl.int64)
    pos = cached + (t - start)
    seq_len = cached + tl.load(row_offsets_ptr + b + 1).to(tl.int64) - start  # L_b, after the step

    rot = d < R
    if INTERLEAVED:
        partner = tl.where(rot, d ^ 1, d)
        freq_i = d // 2
        first = (d % 2) == 0
    else:
        partner = tl.where(rot, (d + R // 2) % R, d)
        freq_i = d % (R // 2)
        first = d < (R // 2)
    row = pos
    if LONG:
        row = tl.where(seq_len > long_after, pos + long_rows, pos)
    in_table = tl.where((row >= 0) & (row < freq_rows), rot, False)  # a refused position reads no row
    cos = tl.load(freqs_ptr + row * stride_freq_p + 2 * freq_i, mask=in_table, other=1.0).to(tl.float32)
    sin = tl.load(freqs_ptr + row * stride_freq_p + 2 * freq_i + 1, mask=in_table, other=0.0).to(tl.float32)
    if DYNAMIC:
        grown = seq_len.to(tl.float32) * (ntk_factor / ntk_original_max.to(tl.float32)) - (ntk_factor - 1.0)
        grown = tl.maximum(grown, 1.0)
        log2_base = tl.log2(ntk_theta) + (R / (R - 2)) * tl.log2(grown)
        inv_freq = tl.exp2(-(2.0 * freq_i.to(tl.float32) / R) * log2_base)
        angle = pos.to(tl.float32) * inv_freq
        use = (seq_len > ntk_original_max) & rot
        cos = tl.where(use, tl.cos(angle), cos)
        sin = tl.where(use, tl.sin(angle), sin)
    sin = tl.where(first, -sin, sin)

    n_total: tl.constexpr = H + 2 * HKV
    h_ok = h < n_total
    mask = h_ok[:, None] & d_ok[None, :]
    head_row = qkv_ptr + t * stride_qkv_t + h[:, None] * D
    x = tl.load(head_row + d[None, :], mask=mask, other=0.0).to(tl.float32)
    x_partner = tl.load(head_row + partner[None, :], mask=mask, other=0.0).to(tl.float32)
    is_rope = (h < H + HKV)[:, None]
    y = tl.where(is_rope, x * cos[None, :] + x_partner * sin[None, :], x)

    q_mask = mask & (h < H)[:, None]
    tl.store(
        q_out_ptr + t * stride_q_t + h[:, None] * D + d[None, :],
        y.to(q_out_ptr.dtype.element_ty),
        mask=q_mask,
    )

    in_row = pos // page_size < max_pages
    if HAS_FLAG:
        in_row = in_row & (tl.load(flag_ptr) == 0)
    page = tl.load(lookup_ptr + b * stride_lut_b + tl.where(in_row, pos // page_size, 0)).to(tl.int64)
    may_write = in_row & (page < num_blocks)
    slot = pos % page_size
    is_v = h >= H + HKV
    kv_head = tl.where(is_v, h - H - HKV, h - H)
    cache_off = (
        page * s_kv0
        + is_v.to(tl.int64)[:, None] * s_kv1
        + layer_idx * s_kv2
        + slot * s_kv3
        + kv_head.to(tl.int64)[:, None] * s_kv4
        + d[None, :] * s_kv5
    )
    kv_mask = tl.where(may_write, mask & (h >= H)[:, None], False)
    tl.store(kv_ptr + cache_off, y.to(kv_ptr.dtype.element_ty), mask=kv_mask)


def rope_split_store_triton(
    qkv: torch.Tensor,
    row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    long_after: int | None = None,
    ntk: list[float] | None = None,
) -> torch.Tensor:
    """Rope q and k, write q out and rope(k), v into the paged cache, in one launch.

    Args:
        qkv: `[T, (n_heads + 2·n_kv_heads)·head_dim]`, rows contiguous.
        row_offsets: `[B+1]` integer row offsets of the ragged batch.
        freqs_cis: `[max_pos, R]` interleaved cos/sin table, R <= head_dim the rotary width
            (`[2·max_pos, R]`, short then long, with `long_after`).
        kv_blocks: `[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`, written in place.
        cache_lengths: `[B]` tokens already cached per sequence.
        lookup_table: `[B, max_pages]` block ids.
        layer_idx, interleaved, n_heads, n_kv_heads, head_dim: as on `fg.rope_split_store`.
        long_after: longrope: sequences longer than this read the second (long) table.
        ntk: dynamic NTK `[theta, factor, original_max]`.

    Returns:
        q after rope, `[T, n_heads·head_dim]` in qkv's dtype.

    Example:
        >>> q = rope_split_store_triton(qkv, ro, freqs, kv, lens, lut, layer_idx=0,
        ...                             interleaved=False, n_heads=32, n_kv_heads=8, head_dim=128)
    """
    t_rows, width = qkv.shape
    if width != (n_heads + 2 * n_kv_heads) * head_dim:
        raise ValueError(
            f"rope_split_store: qkv width {width} != (n_heads + 2·n_kv_heads)·head_dim = "
            f"({n_heads} + 2·{n_kv_heads})·{head_dim}"
        )
    if head_dim % 2:
        raise ValueError(f"rope_split_store: head dim must be even, got {head_dim=}")
    if kv_blocks.shape[4:] != (n_kv_heads, head_dim):
        raise ValueError(
            f"rope_split_store: kv_blocks {tuple(kv_blocks.shape)} != [.., {n_kv_heads}, {head_dim}]"
        )
    if qkv.stride(1) != 1:
        qkv = qkv.contiguous()
    freqs_cis = freqs_cis if freqs_cis.stride(1) == 1 else freqs_cis.contiguous()
    rotary = freqs_cis.shape[1]
    if rotary % 2 or not 2 <= rotary <= head_dim or (ntk is not None and rotary < 4):
        raise ValueError(
            f"rope_split_store: freqs_cis width {rotary} must be even, in [2 (4 with ntk), {head_dim}]"
        )
    theta, factor, original = ntk if ntk is not None else (1.0, 1.0, 1.0)
    lookup_table = lookup_table if lookup_table.stride(1) == 1 else lookup_table.contiguous()
    row_offsets = as_index(row_offsets)
    cache_lengths = as_index(cache_lengths)
    lookup_table = as_index(lookup_table)
    q_out = torch.empty((t_rows, n_heads * head_dim), dtype=qkv.dtype, device=qkv.device)
    if t_rows == 0:
        return q_out
    if row_offsets.shape[0] == 1:  # no sequence owns a row (row offsets the runtime refuses)
        return q_out.zero_()
    batch = row_offsets.shape[0] - 1
    n_total = n_heads + 2 * n_kv_heads
    block_d = triton.next_power_of_2(head_dim)
    block_h = max(1, min(triton.next_power_of_2(n_total), 2048 // block_d))
    grid = (t_rows, triton.cdiv(n_total, block_h))
    _rope_split_store_kernel[grid](
        qkv,
        row_offsets,
        freqs_cis,
        kv_blocks,
        cache_lengths,
        lookup_table,
        q_out,
        batch,
        layer_idx,
        kv_blocks.shape[3],
        qkv.stride(0),
        freqs_cis.stride(0),
        q_out.stride(0),
        lookup_table.stride(0),
        long_after if long_after is not None else 0,
        freqs_cis.shape[0] // 2,
        float(theta),
        float(factor),
        int(original),
        *kv_blocks.stride(),
        kv_blocks.shape[0],
        lookup_table.shape[1],
        kv_blocks if (flag := flag_for(kv_blocks)) is None else flag,
        freqs_cis.shape[0],
        H=n_heads,
        HKV=n_kv_heads,
        D=head_dim,
        R=rotary,
        LONG=long_after is not None,
        DYNAMIC=ntk is not None,
        BLOCK_D=block_d,
        BLOCK_H=block_h,
        BLOCK_B=min(triton.next_power_of_2(max(batch, 1)), 1024),
        INTERLEAVED=interleaved,
        HAS_FLAG=flag is not None,
        num_warps=4,
        **triton_pdl(qkv.device),
    )
    return q_out
