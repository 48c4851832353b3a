"""The device-side write flag: bad step metadata refused on the GPU, with no host sync.

Each paged KV cache (`kv_blocks` tensor) on a GPU gets one flag, eight int64 words on its
device. The eager runtime launches `check_capacity_on_device` first in every step (inside
the CUDA graph when one is captured). It sets the flag, and never clears it, when

- the row offsets do not rise from 0 to the row count (code 2);
- a sequence's new positions pass the rope table's rows (`max_pos`, code 3);
- a sequence's new positions need a page its lookup row does not name (code 1);
- two sequences write the same block (code 4: a write into another sequence's cache),

checked in that order, which is the order of the host checks (`input_checks.py`), so the
first refusal is the one the host would raise. Every cache-writing kernel
(`rope_split_store`, `kv_cache_store`) loads word 0 and writes nothing while it is set. The
runtime copies the flag to pinned host memory without blocking and raises at its next call
(`write_guard.py`). The shared-block check scatters the written block ids into a per-cache
scratch of `num_blocks` int32 words (each block keeps its lowest writing sequence), so it
costs one pass over the written pages, not a pairwise comparison.

Flag words: `[code, sequence, a, b, c, num_blocks, page_size, op id]`:

- code 1: a = the last position, b = the valid pages, c = the first lookup entry past
  `num_blocks` (or -1);
- code 2: sequence = the first entry that falls (or -1), a = row_offsets[0],
  b = row_offsets[B], c = the row count;
- code 3: a = the last position, b = the rope table's positions;
- code 4: sequence = the later writer, a = the earlier one, b = the block.

Example:
    >>> flag = cache_flag(kv_blocks)                 # created once per cache tensor
    >>> check_capacity_on_device(flag.device_words, row_offsets, lengths, lookup, rows,
    ...                          num_blocks, page_size, op_id("fg.kv_cache.store"),
    ...                          owners=flag.owners(num_blocks), max_pos=4096)
    >>> rope_split_store_triton(...)                  # writes nothing if the flag is set
"""

# ruff: noqa: N803, N806 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.metadata import as_index

__all__ = [
    "FLAG_WORDS",
    "CacheFlag",
    "cache_flag",
    "check_capacity_on_device",
    "flag_for",
    "new_flag",
    "op_id",
    "op_name",
]

FLAG_WORDS = 8
_BIG: tl.constexpr = tl.constexpr(2**31 - 1)  # past any sequence, page or block index


@dataclass
class CacheFlag:
    """One cache's flag: the words on its device, their pinned host mirror, and the scratch
    the shared-block check scatters block owners into."""

    device_words: torch.Tensor
    host_words: torch.Tensor = field(repr=False)
    scratch: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.host_view: np.ndarray = self.host_words.numpy()  # the pinned words without torch overhead

    def owners(self, num_blocks: int) -> torch.Tensor:
        """`num_blocks` int32 words of scratch on the flag's device (allocated on first use,
        which the runtime makes before any CUDA-graph capture: its warm-up step)."""
        if self.scratch is None or self.scratch.numel() < num_blocks:
            self.scratch = torch.zeros(max(num_blocks, 1), dtype=torch.int32, device=self.device_words.device)
        return self.scratch

    def clear(self) -> None:
        """Zero both copies (after the runtime has reported the refusal)."""
        self.device_words.zero_()
        self.host_words.zero_()


_FLAGS: dict[tuple[int, int], CacheFlag] = {}
_OPS: list[str] = []


def _key(kv_blocks: torch.Tensor) -> tuple[int, int]:
    return (kv_blocks.device.index or 0, kv_blocks.data_ptr())


def new_flag(device: torch.device) -> CacheFlag:
    """A flag on `device` that no cache tensor owns (a graph that writes no cache keeps one)."""
    words = torch.zeros(FLAG_WORDS, dtype=torch.int64, device=device)
    host = torch.zeros(FLAG_WORDS, dtype=torch.int64)
    return CacheFlag(words, host.pin_memory() if words.is_cuda else host)


def cache_flag(kv_blocks: torch.Tensor) -> CacheFlag:
    """The flag of this cache tensor (by device and storage address), created on first use."""
    key = _key(kv_blocks)
    if (flag := _FLAGS.get(key)) is None:
        flag = _FLAGS[key] = new_flag(kv_blocks.device)
    return flag


def flag_for(kv_blocks: torch.Tensor) -> torch.Tensor | None:
    """The device words a writing kernel must honour, or None (no runtime check owns it)."""
    flag = _FLAGS.get(_key(kv_blocks)) if kv_blocks.is_cuda else None
    return None if flag is None else flag.device_words


def op_id(name: str) -> int:
    """A small integer for an op name, stored in the flag so the message can name the op."""
    if name not in _OPS:
        _OPS.append(name)
    return _OPS.index(name)


def op_name(ident: int) -> str:
    """The op name `op_id` gave `ident`."""
    return _OPS[ident] if 0 <= ident < len(_OPS) else f"op #{ident}"


@triton.jit
def _written(
    ro_ptr,
    lens_ptr,
    lut_ptr,
    start,
    j0,
    B,
    page_size,
    stride_lut,
    BLOCK_B: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """The `[BLOCK_B, BLOCK_P]` tile of written pages: sequences start.., page offsets j0..
    from each sequence's first written page. Returns (sequence, offset, block, written)."""
    b = start + tl.arange(0, BLOCK_B)
    j = j0 + tl.arange(0, BLOCK_P)
    ok = b < B
    lo = tl.load(ro_ptr + b, mask=ok, other=0).to(tl.int64)
    hi = tl.load(ro_ptr + b + 1, mask=ok, other=0).to(tl.int64)
    cached = tl.load(lens_ptr + b, mask=ok, other=0).to(tl.int64)
    first = cached // page_size
    last = (cached + hi - lo - 1) // page_size
    page = first[:, None] + j[None, :]
    used = (ok & (hi > lo))[:, None] & (page <= last[:, None])
    block = tl.load(lut_ptr + b[:, None].to(tl.int64) * stride_lut + page, mask=used, other=0).to(tl.int64)
    return b[:, None] + j[None, :] * 0, j[None, :] + b[:, None] * 0, block, used


@triton.jit
def _shared_block(ro_ptr, lens_ptr, lut_ptr, own_ptr, B, page_size, stride_lut, span, extent,
                  BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr):  # fmt: skip
    """(sequence * span + page offset) of the first written page another, earlier sequence
    also writes, else _BIG. Pages must be checked (every written block < num_blocks).
    `extent`: the most pages after its first that any sequence writes (0 in a decode step),
    so the tiles cover only offsets some sequence writes."""
    j0 = 0
    while j0 <= extent:  # 1: every written block's owner word to _BIG
        for start in range(0, B, BLOCK_B):
            b, j, block, used = _written(
                ro_ptr, lens_ptr, lut_ptr, start, j0, B, page_size, stride_lut, BLOCK_B, BLOCK_P
            )
            tl.atomic_xchg(own_ptr + block, tl.full(b.shape, _BIG, tl.int32), mask=used)
        j0 += BLOCK_P
    tl.debug_barrier()
    j0 = 0
    while j0 <= extent:  # 2: each block keeps its lowest writing sequence
        for start in range(0, B, BLOCK_B):
            b, j, block, used = _written(
                ro_ptr, lens_ptr, lut_ptr, start, j0, B, page_size, stride_lut, BLOCK_B, BLOCK_P
            )
            tl.atomic_min(own_ptr + block, b.to(tl.int32), mask=used)
        j0 += BLOCK_P
    tl.debug_barrier()
    first = tl.program_id(0).to(tl.int64) * 0 + _BIG
    j0 = 0
    while j0 <= extent:  # 3: a page whose block an earlier sequence owns
        for start in range(0, B, BLOCK_B):
            b, j, block, used = _written(
                ro_ptr, lens_ptr, lut_ptr, start, j0, B, page_size, stride_lut, BLOCK_B, BLOCK_P
            )
            owner = tl.atomic_add(own_ptr + block, tl.zeros(b.shape, tl.int32), mask=used)  # read at L2
            key = b.to(tl.int64) * span + j
            first = tl.minimum(first, tl.min(tl.min(tl.where(used & (owner < b), key, _BIG), axis=1), axis=0))
        j0 += BLOCK_P
    return first


@triton.jit
def _check_kernel(
    ro_ptr, lens_ptr, lut_ptr, flag_ptr, own_ptr, B, rows, num_blocks, page_size, max_pages, stride_lut, op,
    max_pos, rope_op, offsets_op, span,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
    HAS_PAGES: tl.constexpr, HAS_ROPE: tl.constexpr, HAS_OWNERS: tl.constexpr,
):  # fmt: skip
    if tl.load(flag_ptr) != 0:  # sticky: the first refusal stays until the host reports it
        return
    ro_first = tl.load(ro_ptr).to(tl.int64)
    ro_last = tl.load(ro_ptr + B).to(tl.int64)
    falls = ro_first * 0 + _BIG  # int64 scalars (loop-carried)
    over = ro_first * 0 + _BIG
    past = ro_first * 0 + _BIG
    extent = ro_first * 0  # the most pages after its first that a sequence writes
    for start in range(0, B, BLOCK_B):
        b = start + tl.arange(0, BLOCK_B)
        ok = b < B
        lo = tl.load(ro_ptr + b, mask=ok, other=0).to(tl.int64)
        hi = tl.load(ro_ptr + b + 1, mask=ok, other=0).to(tl.int64)
        falls = tl.minimum(falls, tl.min(tl.where(ok & (hi < lo), b.to(tl.int64), _BIG), axis=0))
        cached = tl.load(lens_ptr + b, mask=ok, other=0).to(tl.int64)
        writes = ok & (hi > lo)
        if HAS_ROPE:
            past = tl.minimum(
                past, tl.min(tl.where(writes & (cached + hi - lo > max_pos), b.to(tl.int64), _BIG), axis=0)
            )
        if HAS_PAGES:
            need = (cached + hi - lo - 1) // page_size  # the page of the last new position
            extent = tl.maximum(extent, tl.max(tl.where(writes, need - cached // page_size, 0), axis=0))
            bad = writes & (need >= max_pages)
            for p0 in range(0, max_pages, BLOCK_P):
                p = p0 + tl.arange(0, BLOCK_P)
                used = writes[:, None] & (p[None, :] <= need[:, None]) & (p[None, :] < max_pages)
                entry = tl.load(
                    lut_ptr + b[:, None].to(tl.int64) * stride_lut + p[None, :], mask=used, other=0
                )
                bad = bad | (tl.max((used & (entry.to(tl.int64) >= num_blocks)).to(tl.int32), axis=1) > 0)
            over = tl.minimum(over, tl.min(tl.where(bad, b.to(tl.int64), _BIG), axis=0))
    if (ro_first != 0) | (ro_last != rows) | (falls < _BIG):
        _store(
            flag_ptr,
            2,
            tl.where(falls < _BIG, falls, -1),
            ro_first,
            ro_last,
            ro_first * 0 + rows,
            0,
            0,
            offsets_op,
        )
    elif past < _BIG:
        last = (
            tl.load(lens_ptr + past).to(tl.int64)
            + tl.load(ro_ptr + past + 1).to(tl.int64)
            - tl.load(ro_ptr + past).to(tl.int64)
            - 1
        )
        _store(flag_ptr, 3, past, last, ro_first * 0 + max_pos, -1, 0, 0, rope_op)
    elif over < _BIG:
        lo = tl.load(ro_ptr + over).to(tl.int64)
        hi = tl.load(ro_ptr + over + 1).to(tl.int64)
        last = tl.load(lens_ptr + over).to(tl.int64) + hi - lo - 1
        valid = ro_first * 0 + max_pages  # the first lookup entry past num_blocks, else max_pages
        for p0 in range(0, max_pages, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            entry = tl.load(lut_ptr + over * stride_lut + p, mask=p < max_pages, other=0).to(tl.int64)
            valid = tl.minimum(
                valid, tl.min(tl.where((p < max_pages) & (entry >= num_blocks), p, _BIG), axis=0)
            )
        in_row = valid < max_pages
        entry = tl.load(lut_ptr + over * stride_lut + valid, mask=in_row, other=0).to(tl.int64)
        _store(flag_ptr, 1, over, last, valid, tl.where(in_row, entry, -1), num_blocks, page_size, op)
    elif HAS_OWNERS:
        key = _shared_block(
            ro_ptr, lens_ptr, lut_ptr, own_ptr, B, page_size, stride_lut, span, extent, BLOCK_B, BLOCK_S
        )
        if key < _BIG:
            seq = key // span
            page = tl.load(lens_ptr + seq).to(tl.int64) // page_size + key % span
            block = tl.load(lut_ptr + seq * stride_lut + page).to(tl.int64)
            other = tl.atomic_add(own_ptr + block, 0).to(tl.int64)
            _store(flag_ptr, 4, seq, other, block, -1, num_blocks, page_size, op)


@triton.jit
def _store(flag_ptr, code, seq, a, b, c, num_blocks, page_size, op):
    """Write the refusal's words, word 0 (the code the writing kernels test) last."""
    zero = tl.program_id(0).to(tl.int64) * 0
    tl.store(flag_ptr + 1, zero + seq)
    tl.store(flag_ptr + 2, zero + a)
    tl.store(flag_ptr + 3, zero + b)
    tl.store(flag_ptr + 4, zero + c)
    tl.store(flag_ptr + 5, zero + num_blocks)
    tl.store(flag_ptr + 6, zero + page_size)
    tl.store(flag_ptr + 7, zero + op)
    tl.store(flag_ptr, zero + code)


def check_capacity_on_device(
    flag: torch.Tensor,
    row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor | None,
    rows: int,
    num_blocks: int,
    page_size: int,
    op: int,
    *,
    owners: torch.Tensor | None = None,
    max_pos: int | None = None,
    rope_op: int | None = None,
    offsets_op: int | None = None,
) -> None:
    """Set `flag` (one launch, no host sync) if this step's metadata would write out of place.

    Args:
        flag: the cache's device words (`cache_flag(kv_blocks).device_words`).
        row_offsets, cache_lengths, lookup_table: the step's ragged metadata `[B+1]`, `[B]`,
            `[B, max_pages]`; lookup_table None checks no pages (row offsets and rope only).
        rows: the row count of the written tensor (`row_offsets[B]` must equal it).
        num_blocks, page_size: `kv_blocks.shape[0]` and `kv_blocks.shape[3]`.
        op: `op_id(op name)` of the write, for the message.
        owners: `num_blocks` int32 words of scratch (`CacheFlag.owners`): check that no two
            sequences write one block. None: not checked.
        max_pos: the rope table's positions: refuse a sequence whose new positions reach it.
        rope_op, offsets_op: `op_id` named by a rope or a row-offsets refusal (default `op`).
    """
    batch = cache_lengths.shape[0]
    has_pages = lookup_table is not None
    lut = as_index(lookup_table) if lookup_table is not None else as_index(cache_lengths)
    max_pages = lut.shape[1] if has_pages else 0
    # pages one sequence writes: at most (rows - 1) // page_size + 2 (a partial page at each end);
    # the shared-block tiles are as wide as an average sequence's pages (decode: 2)
    span = max(1, min(max_pages, (rows - 1) // max(page_size, 1) + 2))
    typical = min(span, -(-rows // max(batch * page_size, 1)) + 1)
    has_owners = has_pages and owners is not None
    _check_kernel[(1,)](
        as_index(row_offsets), as_index(cache_lengths), lut, flag, owners if has_owners else flag,
        batch, rows, num_blocks, page_size, max_pages, lut.stride(0), op,
        0 if max_pos is None else max_pos, op if rope_op is None else rope_op,
        op if offsets_op is None else offsets_op, span,
        BLOCK_B=min(triton.next_power_of_2(max(batch, 1)), 256),
        BLOCK_P=min(triton.next_power_of_2(max(max_pages, 1)), 64),
        BLOCK_S=min(triton.next_power_of_2(typical), 64),
        HAS_PAGES=has_pages, HAS_ROPE=max_pos is not None, HAS_OWNERS=has_owners,
        num_warps=4,
    )  # fmt: skip
