"""The device-side write flag: a cache overflow refused on the GPU, with no host sync.

Each paged KV cache (`kv_blocks` tensor) on a GPU gets one flag, eight int64 words on its
device. The eager runtime launches `check_capacity_on_device` first in every step (inside
the CUDA graph when one is captured). It sets the flag when a sequence's new positions
need a page its lookup row does not name, or when the row offsets do not rise from 0 to
the row count, and it never clears it. Every cache-writing kernel (`rope_split_store`,
`kv_cache_store`) loads word 0 and writes nothing while it is set. The runtime copies the
flag to pinned host memory without blocking and raises at its next call (`write_guard.py`).

Flag words: `[code, sequence, last position, valid pages, lookup entry, num_blocks,
page_size, op id]`; code 1 is a capacity overflow (entry: the first lookup entry past
`num_blocks`, or -1), code 2 bad row offsets (sequence: the first entry that falls, or -1;
last position: row_offsets[0]; valid pages: row_offsets[B]; lookup entry: the row count).

Example:
    >>> flag = cache_flag(kv_blocks)                 # created once per cache tensor
    >>> check_capacity_on_device(flag.device_words, row_offsets, lengths, lookup, rows, op_id)
    >>> rope_split_store_triton(...)                  # writes nothing if the flag is set
"""

# ruff: noqa: N803, N806 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

from dataclasses import dataclass, field

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
    "op_id",
    "op_name",
]

FLAG_WORDS = 8
_BIG: tl.constexpr = tl.constexpr(2**31 - 1)  # past any sequence or page index


@dataclass
class CacheFlag:
    """One cache's flag: the words on its device and their pinned host mirror."""

    device_words: torch.Tensor
    host_words: torch.Tensor = field(repr=False)

    def __post_init__(self) -> None:
        self.host_view = self.host_words.numpy()  # reads the pinned words without torch overhead

    def clear(self) -> None:
        """Zero both copies (after the runtime has reported the refusal)."""
        self.device_words.zero_()
        self.host_words.zero_()


_FLAGS: dict[tuple[int, int], CacheFlag] = {}
_OPS: list[str] = []


def _key(kv_blocks: torch.Tensor) -> tuple[int, int]:
    return (kv_blocks.device.index or 0, kv_blocks.data_ptr())


def cache_flag(kv_blocks: torch.Tensor) -> CacheFlag:
    """The flag of this cache tensor (by device and storage address), created on first use."""
    key = _key(kv_blocks)
    if (flag := _FLAGS.get(key)) is None:
        words = torch.zeros(FLAG_WORDS, dtype=torch.int64, device=kv_blocks.device)
        flag = CacheFlag(words, torch.zeros(FLAG_WORDS, dtype=torch.int64).pin_memory())
        _FLAGS[key] = flag
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
def _check_kernel(
    ro_ptr, lens_ptr, lut_ptr, flag_ptr, B, rows, num_blocks, page_size, max_pages, stride_lut, op,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    if tl.load(flag_ptr) != 0:  # sticky: the first refusal stays until the host reports it
        return
    ro_first = tl.load(ro_ptr).to(tl.int64)
    ro_last = tl.load(ro_ptr + B).to(tl.int64)
    falls = ro_first * 0 + _BIG  # int64 scalars (loop-carried)
    over = ro_first * 0 + _BIG
    for start in range(0, B, BLOCK_B):
        b = start + tl.arange(0, BLOCK_B)
        ok = b < B
        lo = tl.load(ro_ptr + b, mask=ok, other=0).to(tl.int64)
        hi = tl.load(ro_ptr + b + 1, mask=ok, other=0).to(tl.int64)
        falls = tl.minimum(falls, tl.min(tl.where(ok & (hi < lo), b.to(tl.int64), _BIG), axis=0))
        cached = tl.load(lens_ptr + b, mask=ok, other=0).to(tl.int64)
        writes = ok & (hi > lo)
        need = (cached + hi - lo - 1) // page_size  # the page of the last new position
        bad = writes & (need >= max_pages)
        for p0 in range(0, max_pages, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            used = writes[:, None] & (p[None, :] <= need[:, None]) & (p[None, :] < max_pages)
            entry = tl.load(lut_ptr + b[:, None].to(tl.int64) * stride_lut + p[None, :], mask=used, other=0)
            bad = bad | (tl.max((used & (entry.to(tl.int64) >= num_blocks)).to(tl.int32), axis=1) > 0)
        over = tl.minimum(over, tl.min(tl.where(bad, b.to(tl.int64), _BIG), axis=0))
    if (ro_first != 0) | (ro_last != rows) | (falls < _BIG):
        tl.store(flag_ptr + 1, tl.where(falls < _BIG, falls, -1))
        tl.store(flag_ptr + 2, ro_first)
        tl.store(flag_ptr + 3, ro_last)
        tl.store(flag_ptr + 4, ro_first * 0 + rows)
        tl.store(flag_ptr + 7, ro_first * 0 + op)
        tl.store(flag_ptr, 2)
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
        tl.store(flag_ptr + 1, over)
        tl.store(flag_ptr + 2, last)
        tl.store(flag_ptr + 3, valid)
        tl.store(flag_ptr + 4, tl.where(in_row, entry, -1))
        tl.store(flag_ptr + 5, ro_first * 0 + num_blocks)
        tl.store(flag_ptr + 6, ro_first * 0 + page_size)
        tl.store(flag_ptr + 7, ro_first * 0 + op)
        tl.store(flag_ptr, 1)


def check_capacity_on_device(
    flag: torch.Tensor,
    row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    rows: int,
    num_blocks: int,
    page_size: int,
    op: int,
) -> None:
    """Set `flag` (one launch, no host sync) if this step's writes would overflow.

    Args:
        flag: the cache's device words (`cache_flag(kv_blocks).device_words`).
        row_offsets, cache_lengths, lookup_table: the step's ragged metadata `[B+1]`, `[B]`,
            `[B, max_pages]`.
        rows: the row count of the written tensor (`row_offsets[B]` must equal it).
        num_blocks, page_size: `kv_blocks.shape[0]` and `kv_blocks.shape[3]`.
        op: `op_id(op name)`, for the message.
    """
    batch = cache_lengths.shape[0]
    lookup_table = as_index(lookup_table)
    max_pages = lookup_table.shape[1]
    _check_kernel[(1,)](
        as_index(row_offsets), as_index(cache_lengths), lookup_table, flag, batch, rows, num_blocks, page_size,
        max_pages, lookup_table.stride(0), op,
        BLOCK_B=min(triton.next_power_of_2(max(batch, 1)), 256),
        BLOCK_P=min(triton.next_power_of_2(max(max_pages, 1)), 64),
        num_warps=4,
    )  # fmt: skip
