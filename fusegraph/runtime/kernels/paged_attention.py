"""Triton paged attention for ragged batches (prefill and decode), causal, GQA, sliding window.

Query row t of sequence b sits at position p = cache_lengths[b] + t − row_offsets[b] and
attends to keys 0 .. p of sequence b (p − window + 1 .. p with a sliding window); key
position j lives in kv_blocks[lookup_table[b, j // page_size], 0|1, layer, j % page_size].

Grid: (query tiles, kv heads). A query tile is BLOCK_M consecutive rows of ONE sequence
times the G = H/Hkv query heads that share a kv head, so each K/V tile loaded from the
cache serves BLOCK_M·G query rows. Tiles are numbered sequence by sequence; a program finds
its sequence from the running sum of ceil(n_b / BLOCK_M) (computed in the kernel, so the
launch needs no host sync and can be captured in a CUDA graph). The grid has
ceil(T / BLOCK_M) + B tiles, an upper bound; programs past the last tile return at once. A decode
step of one sequence, or of `WIDE_DECODE_PROGRAMS` (sequence, kv head) programs or more, launches
exactly its T tiles (`key_plan`).

The softmax is the online (flash) form, in fp32 with exp2.

With a `perm` (int32 `[H·D]`: `fg.attention.paged ... perm`, an act-order o_proj's input) the kernel that writes
the output (the attention, or the split combine) stores element (t, c = h·D + d) at column `inv[c]` of the `[T, H·D]`
output, `inv` the inverse permutation (made once per perm tensor, `tensor_cache.derived`): `out[:, j] = attn[:, perm[j]]`
with no pass of its own. The stores are scattered 2-byte ones, so from `SEPARATE_PERM_ROWS` query rows a separate
coalesced pass (`permute_rows`) after the attention is cheaper, and that is what runs there.
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.gptq_cuda_permute import gather_last_dim
from fusegraph.runtime.kernels.metadata import as_index
from fusegraph.runtime.kernels.paged_attention_plan import (
    WIDE_DECODE_PROGRAMS,
    combine_rows,
    key_plan,
    merges_in_place,
)
from fusegraph.runtime.kernels.pdl import pdl_enter, triton_pdl
from fusegraph.runtime.kernels.tensor_cache import UNSEEN, derived, zeroed_tickets

__all__ = ["WIDE_DECODE_PROGRAMS", "combine_rows", "key_plan", "merges_in_place", "paged_attention_triton"]

_LOG2E = 1.4426950408889634
SEPARATE_PERM_ROWS = 16
"""From this many query rows an output perm is applied after the attention by `permute_rows` (one coalesced pass over
`[T, H·D]`) rather than by the storing kernel's scattered 2-byte stores. H200, Llama-3-8B heads, decode at ctx 2048
(`benchmarks/gpu_attention_perm.py`, 2026-12-02): stored permuted, the attention took 11.82 / 12.41 / 16.89 / 28.99 /
54.29 / 157.86 µs at 1 / 2 / 4 / 8 / 16 / 64 rows; attention then `permute_rows`, 12.10 / 12.89 / 17.66 / 29.30 /
53.73 / 152.64 (the attention alone, 11.29 / 11.85 / 16.17 / 28.03 / 51.84 / 149.77)."""


@triton.jit
def _out_columns(inv_ptr, head, d, stride_oh, D: tl.constexpr, mask, HAS_PERM: tl.constexpr):
    """Where (head, d) goes in its output row: `inv[head·D + d]` with a perm (the output then is `[T, H·D]`
    contiguous), else `head·stride_oh + d`."""
    if HAS_PERM:
        return tl.load(inv_ptr + head[:, None] * D + d[None, :], mask=mask, other=0)
    return head[:, None] * stride_oh + d[None, :]


@triton.jit
def _paged_attention_kernel(
    q_ptr, ro_ptr, kv_ptr, lens_ptr, lut_ptr, out_ptr, ml_ptr, inv_ptr, fin_ptr, cnt_ptr,
    B, layer_idx, page_size, qk_scale, window, split_len, max_pages, num_blocks,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_lut, stride_os, stride_ms,
    s_kv0, s_kv1, s_kv2, s_kv3, s_kv4, s_kv5, T,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    HAS_WINDOW: tl.constexpr, SPLIT: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
    PDL: tl.constexpr, HAS_PERM: tl.constexpr = False, NUM_SPLITS: tl.constexpr = 1, MERGE: tl.constexpr = False,
):  # fmt: skip
    pdl_enter(PDL)
    tile = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    # Which sequence and which tile of it: the running sum of tiles per sequence.
    seqs = tl.arange(0, BLOCK_B)
    seq_ok = seqs < B
    starts = tl.load(ro_ptr + seqs, mask=seq_ok, other=0).to(tl.int32)
    ends = tl.load(ro_ptr + seqs + 1, mask=seq_ok, other=0).to(tl.int32)
    tiles = tl.where(seq_ok, (ends - starts + BLOCK_M - 1) // BLOCK_M, 0)
    tiles_through = tl.cumsum(tiles, axis=0)
    b = tl.sum((tiles_through <= tile).to(tl.int32), axis=0)
    if b >= B:
        return
    mine = seqs == b
    j = tile - tl.sum(tl.where(mine, tiles_through - tiles, 0), axis=0)
    start = tl.sum(tl.where(mine, starts, 0), axis=0)
    n_rows = tl.sum(tl.where(mine, ends - starts, 0), axis=0)
    cache_len = tl.load(lens_ptr + b).to(tl.int32)

    # Rows of the tile: (query row r, head g within the kv head's group).
    i = tl.arange(0, BLOCK_M * GP)
    r = j * BLOCK_M + i // GP
    g = i % GP
    row_ok = (r < n_rows) & (g < G) & (start + r < T)  # T: refused row offsets may pass the rows
    t = (start + r).to(tl.int64)
    head = kvh * G + g
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(q_ptr + t[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    if DOT_FP32:
        q = q.to(tl.float32)
    pos_q = cache_len + r
    kv_len = cache_len + tl.minimum((j + 1) * BLOCK_M, n_rows)
    k_lo = 0
    if HAS_WINDOW:
        k_lo = tl.maximum(cache_len + j * BLOCK_M - window + 1, 0) // BLOCK_N * BLOCK_N
    if SPLIT:  # this program's slice of the keys (split_len is a multiple of BLOCK_N)
        k_lo = tl.maximum(k_lo, split * split_len)
        kv_len = tl.minimum(kv_len, (split + 1) * split_len)

    m_i = tl.full([BLOCK_M * GP], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M * GP], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M * GP, BLOCK_D], dtype=tl.float32)
    head_off = layer_idx * s_kv2 + kvh * s_kv4
    for k0 in range(k_lo, kv_len, BLOCK_N):
        k_pos = k0 + tl.arange(0, BLOCK_N)
        # A key past the lookup row or in a block past num_blocks is not read (a refused
        # overflow still runs this step; the runtime raises it, and the loads stay in bounds).
        k_ok = (k_pos < kv_len) & (k_pos // page_size < max_pages)
        page = tl.load(lut_ptr + b * stride_lut + k_pos // page_size, mask=k_ok, other=0).to(tl.int64)
        k_ok = k_ok & (page < num_blocks)
        base = page * s_kv0 + (k_pos % page_size).to(tl.int64) * s_kv3 + head_off
        kv_mask = k_ok[:, None] & d_ok[None, :]
        k = tl.load(kv_ptr + base[:, None] + d[None, :] * s_kv5, mask=kv_mask, other=0.0)
        v = tl.load(kv_ptr + s_kv1 + base[:, None] + d[None, :] * s_kv5, mask=kv_mask, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        visible = k_ok[None, :] & (k_pos[None, :] <= pos_q[:, None])
        if HAS_WINDOW:
            visible = visible & (k_pos[None, :] > pos_q[:, None] - window)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    # partial states (unnormalized acc, running max, sum), merged by the tile's last split or the combine kernel
    if SPLIT:
        rows = t * (stride_ot // stride_oh) + head  # row t·H + h of the [T·H] partial states
        acc_mask = row_ok[:, None] & d_ok[None, :]
        tl.store(out_ptr + split * stride_os + rows[:, None] * D + d[None, :], acc, mask=acc_mask)
        ml = ml_ptr + split * stride_ms + rows * 2
        tl.store(ml, m_i, mask=row_ok)
        tl.store(ml + 1, l_i, mask=row_ok)
        if MERGE:  # a ticket per (tile, kv head): the split that arrives last merges them all and resets it
            tl.debug_barrier()  # every thread's stores happen before the ticket's release
            slot = cnt_ptr + tile * tl.num_programs(1) + kvh
            if tl.atomic_add(slot, 1, sem="acq_rel", scope="gpu") == NUM_SPLITS - 1:
                tl.atomic_xchg(slot, 0, sem="relaxed", scope="gpu")
                out = _merge_splits(
                    out_ptr, ml_ptr, rows, row_ok, d, d_ok, stride_os, stride_ms, NUM_SPLITS, D
                )
                col = _out_columns(inv_ptr, head, d, stride_oh, D, acc_mask, HAS_PERM)
                out = out.to(fin_ptr.dtype.element_ty)
                tl.store(fin_ptr + t[:, None] * stride_ot + col, out, mask=acc_mask)
    else:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        o_mask = row_ok[:, None] & d_ok[None, :]
        col = _out_columns(inv_ptr, head, d, stride_oh, D, o_mask, HAS_PERM)
        tl.store(out_ptr + t[:, None] * stride_ot + col, out.to(out_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _merge_splits(acc_ptr, ml_ptr, rows, ok, d, d_ok, stride_os, stride_ms,
                  NUM_SPLITS: tl.constexpr, D: tl.constexpr):  # fmt: skip
    """Σ_s 2^(m_s − M)·acc_s / Σ_s 2^(m_s − M)·l_s of the partial rows `rows` (t·H + h) over the key splits, in one
    pass (the running max rescales the sums, so no load waits on another), read from L2 (".cg": another program or
    kernel wrote them)."""
    m_run = tl.full(rows.shape, -1.0e30, dtype=tl.float32)
    num = tl.zeros([rows.shape[0], d.shape[0]], dtype=tl.float32)
    den = tl.zeros(rows.shape, dtype=tl.float32)
    for s in tl.static_range(NUM_SPLITS):
        m_s = tl.load(ml_ptr + s * stride_ms + rows * 2, mask=ok, other=-1.0e30, cache_modifier=".cg")
        l_s = tl.load(ml_ptr + s * stride_ms + rows * 2 + 1, mask=ok, other=0.0, cache_modifier=".cg")
        a = tl.load(acc_ptr + s * stride_os + rows[:, None] * D + d[None, :], mask=ok[:, None] & d_ok[None, :],
                    other=0.0, cache_modifier=".cg")  # fmt: skip
        m_new = tl.maximum(m_run, m_s)
        alpha = tl.exp2(m_run - m_new)
        w = tl.exp2(m_s - m_new)
        num = num * alpha[:, None] + w[:, None] * a
        den = den * alpha + w * l_s
        m_run = m_new
    return num / tl.where(den > 0, den, 1.0)[:, None]


@triton.jit
def _combine_splits_kernel(
    acc_ptr, ml_ptr, out_ptr, inv_ptr, n_rows, stride_os, stride_ms, stride_ot, stride_oh, H,
    NUM_SPLITS: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, PDL: tl.constexpr,
    HAS_PERM: tl.constexpr,
):  # fmt: skip
    """out[t, h] = Σ_s 2^(m_s − M)·acc_s / Σ_s 2^(m_s − M)·l_s over the key splits (flash-decoding)."""
    pdl_enter(PDL)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # row = t·H + h
    ok = rows < n_rows
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    out = _merge_splits(acc_ptr, ml_ptr, rows, ok, d, d_ok, stride_os, stride_ms, NUM_SPLITS, D)
    t = rows // H
    o_mask = ok[:, None] & d_ok[None, :]
    col = _out_columns(inv_ptr, rows % H, d, stride_oh, D, o_mask, HAS_PERM)
    tl.store(out_ptr + t[:, None] * stride_ot + col, out.to(out_ptr.dtype.element_ty), mask=o_mask)


def paged_attention_triton(
    q: torch.Tensor,
    row_offsets: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    scale: float,
    sliding_window: int | None = None,
    perm: torch.Tensor | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_splits: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    perm_apart: bool | None = None,
    merge_in_place: bool | None = None,
) -> torch.Tensor:
    """Causal paged attention of the ragged queries `q [T, H, D]` over the cache.

    The step's own keys must already be in the cache (the layer stores before it attends).

    Args:
        q: `[T, n_heads, head_dim]`.
        row_offsets: `[B+1]`; cache_lengths: `[B]`; lookup_table: `[B, max_pages]`.
        kv_blocks: `[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`.
        layer_idx, scale, sliding_window, perm: as on `fg.attention.paged` (perm's values are checked once per
            tensor, a ValueError naming the first bad entry).
        block_m, block_n: query rows per tile and keys per step (default: picked from the shape).
        num_splits: split each sequence's keys into this many slices, one program each, merged by a second
            kernel or by the slice that finishes last (flash-decoding; `merge_in_place`). Default: enough to fill
            the GPU when the query tiles alone cannot (decode), else 1. The slices are cut from the lookup table's
            capacity (max_pages · page_size), a shape, so the launch needs no host sync and can
            be captured in a CUDA graph; slices past a sequence's length do no work.
        num_warps, num_stages: Triton launch options of the attention kernel.
        perm_apart: with a perm, attend then permute the output by `permute_rows` (True) or store it permuted (False);
            default: apart from `SEPARATE_PERM_ROWS` query rows.
        merge_in_place: with splits, the last of a tile's split programs to finish (an atomic ticket per tile and kv
            head, left at zero for the next launch) merges the partial states (True), or a second kernel does (False);
            default: in place in the wide decode plan (`merges_in_place`).

    Returns:
        `[T, n_heads, head_dim]` in q's dtype.

    Example:
        >>> out = paged_attention_triton(q, ro, kv, lens, lut, layer_idx=0, scale=128**-0.5)
    """
    t_rows, n_heads, head_dim = q.shape
    n_kv_heads = kv_blocks.shape[4]
    if n_heads % n_kv_heads or kv_blocks.shape[5] != head_dim:
        raise ValueError(
            f"paged_attention: q heads {n_heads} / dim {head_dim} do not fit kv_blocks {tuple(kv_blocks.shape)}"
        )
    if q.stride(2) != 1:
        q = q.contiguous()
    inv = None
    if perm is not None:
        _check_perm(q, perm)
        apart = t_rows >= SEPARATE_PERM_ROWS if perm_apart is None else perm_apart
        inv = None if apart else _inverse(perm)
        if inv is None:  # many rows, or a perm first seen under CUDA-graph capture: attend, then permute
            out = paged_attention_triton(q, row_offsets, kv_blocks, cache_lengths, lookup_table, layer_idx, scale,
                                         sliding_window, block_m=block_m, block_n=block_n, num_splits=num_splits,
                                         num_warps=num_warps, num_stages=num_stages,
                                         merge_in_place=merge_in_place)  # fmt: skip
            return _permuted(out.reshape(t_rows, -1), perm).reshape(q.shape)
    row_offsets, cache_lengths = as_index(row_offsets), as_index(cache_lengths)
    lookup_table = as_index(lookup_table)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous: a perm's columns are of [T, H·D]
    batch = row_offsets.shape[0] - 1
    if t_rows == 0 or batch == 0:
        return out
    group = n_heads // n_kv_heads
    gp = triton.next_power_of_2(group)
    if block_m is None:  # decode (one row per sequence) wants few rows; prefill wants 64 rows
        block_m = max(1, (16 if t_rows <= batch else 64) // gp)
    on_gpu = q.device.type == "cuda"
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count if on_gpu else 4
    capacity = lookup_table.shape[1] * kv_blocks.shape[3]
    plan_n, plan_splits, exact = key_plan(t_rows, batch, block_m, n_kv_heads, head_dim, capacity, sms)
    block_n = plan_n if block_n is None else block_n
    if num_splits is None:
        num_splits = max(1, min(plan_splits, capacity // block_n))
    tiles = triton.cdiv(t_rows, block_m) + batch
    tiles = min(t_rows, tiles) if exact else tiles
    split_len = triton.cdiv(triton.cdiv(max(capacity, 1), num_splits), block_n) * block_n
    num_splits = max(1, triton.cdiv(capacity, split_len))
    split = num_splits > 1
    in_place = merges_in_place(t_rows, batch, n_kv_heads) if merge_in_place is None else merge_in_place
    merge = split and in_place
    if split:
        ws = torch.empty((num_splits, t_rows, n_heads, head_dim), dtype=torch.float32, device=q.device)
        ml = torch.empty((num_splits, t_rows, n_heads, 2), dtype=torch.float32, device=q.device)
        dest, strides = ws, (ws.stride(1), ws.stride(2), ws.stride(0), ml.stride(0))
    else:
        dest, ml, strides = out, out, (out.stride(0), out.stride(1), 0, 0)
    tickets = zeroed_tickets("paged attention merge", q.device, tiles * n_kv_heads) if merge else out
    _paged_attention_kernel[(tiles, n_kv_heads, num_splits)](
        q, row_offsets, kv_blocks, cache_lengths, lookup_table, dest, ml, out if inv is None else inv, out, tickets,
        batch, layer_idx, kv_blocks.shape[3], scale * _LOG2E, sliding_window or 0, split_len,
        lookup_table.shape[1], kv_blocks.shape[0],
        q.stride(0), q.stride(1), strides[0], strides[1], lookup_table.stride(0), strides[2], strides[3],
        *kv_blocks.stride(), t_rows,
        G=group, GP=gp, D=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=triton.next_power_of_2(batch),
        HAS_WINDOW=sliding_window is not None, SPLIT=split,
        # Triton 3.9's interpreter gets bf16 dots wrong, so on the CPU the dots run in fp32.
        DOT_FP32=not on_gpu, DOT_PRECISION="ieee" if q.dtype == torch.float32 or not on_gpu else "tf32",
        HAS_PERM=inv is not None and (merge or not split), NUM_SPLITS=num_splits, MERGE=merge, num_warps=num_warps,
        num_stages=num_stages, **triton_pdl(q.device),
    )  # fmt: skip
    if split and not merge:
        n_rows = t_rows * n_heads
        block_r = combine_rows(n_rows, sms)
        _combine_splits_kernel[(triton.cdiv(n_rows, block_r),)](
            ws, ml, out, out if inv is None else inv, n_rows, ws.stride(0), ml.stride(0), out.stride(0),
            out.stride(1), n_heads, NUM_SPLITS=num_splits, D=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
            BLOCK_R=block_r, HAS_PERM=inv is not None, num_warps=4, **triton_pdl(q.device),
        )  # fmt: skip
    return out


def _check_perm(q: torch.Tensor, perm: torch.Tensor) -> None:
    from fusegraph.ops.attention import check_attention_perm  # here: kernel modules import only torch, triton

    check_attention_perm(q, perm)


def _permuted(out: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """`out[:, perm]` of the `[T, H·D]` output: `gather_last_dim` (`permute_rows`, one coalesced pass) once the perm's
    values were read (that kernel does not mask), else aten's `index_select` (a perm first seen under capture)."""
    from fusegraph.ops.norm import perm_checked

    return gather_last_dim(out, perm) if perm_checked(perm) else out.index_select(1, perm)


def _inverse(perm: torch.Tensor) -> torch.Tensor | None:
    """`inv` with `inv[perm[j]] = j` (int32, on perm's device), made once per perm tensor (checked before); None under
    CUDA-graph capture for a perm not seen before."""

    def build() -> torch.Tensor:
        inv = torch.empty_like(perm)
        return inv.scatter_(0, perm.long(), torch.arange(perm.shape[0], dtype=perm.dtype, device=perm.device))

    inv = derived("attention inverse perm", (perm,), build)
    return None if inv is UNSEEN else inv
