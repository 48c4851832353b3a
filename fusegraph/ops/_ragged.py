"""Helpers shared by the ragged / paged-KV op families (rope, kv_cache, attention,
rope_split_store): operand checks for the metadata tensors and the kv_blocks buffer, and
the IREE-friendly index arithmetic of the ragged layout.

Ragged layout: sequence `b` owns rows `row_offsets[b] .. row_offsets[b+1]`; the position of
row `t` is `cache_lengths[b] + (t - row_offsets[b])`. Paged cache: position `p` of sequence
`b` lives in block `lookup_table[b, p // page_size]`, slot `p % page_size`, of
`kv_blocks[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`.

The torch helpers use only 1-D `index_select`, comparisons, reductions and integer
arithmetic, so they trace under `make_fx(tracing_mode="symbolic")` and compile with IREE
(no multi-tensor `aten.index`, no data-dependent Python control flow).
"""

from __future__ import annotations

from typing import Any

import torch

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.ops._common import expect_buffer, expect_dtype, expect_rank, expect_same_device, expect_tensor

#: A lookup-table entry that names no block (unused pages of a sequence's row).
NO_BLOCK = 2**32 - 1

KV_BLOCKS_LAYOUT = "[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]"


# --- shape-rule helpers ---------------------------------------------------------------
def check_metadata(
    op: str,
    row_offsets: Any,
    lengths: Any,
    lookup_table: Any | None = None,
    *,
    lengths_name: str = "cache_lengths",
) -> tuple[TensorType, TensorType, TensorType | None]:
    """Check `input_row_offsets [B+1]`, `cache_lengths [B]` and `lookup_table [B, max_pages]`.

    All are uint32. `B+1` is only checked when both dims are static (a graph may name them
    `batch_plus_1` and `batch`).
    """
    ro = expect_tensor(op, "input_row_offsets", row_offsets)
    ln = expect_tensor(op, lengths_name, lengths)
    for name, t in (("input_row_offsets", ro), (lengths_name, ln)):
        expect_rank(op, name, t, 1)
        expect_dtype(op, name, t, [DType.uint32])
    nb_plus_1, nb = ro.shape[0], ln.shape[0]
    if nb_plus_1.is_static and nb.is_static and nb_plus_1.value != nb.value + 1:
        raise ValueError(
            f"{op}: input_row_offsets dim 0 ({nb_plus_1}) != {lengths_name} dim 0 + 1 ({nb.value + 1})"
        )
    if lookup_table is None:
        return ro, ln, None
    lt = expect_tensor(op, "lookup_table", lookup_table)
    expect_rank(op, "lookup_table", lt, 2)
    expect_dtype(op, "lookup_table", lt, [DType.uint32])
    if lt.shape[0] != nb:
        raise ValueError(f"{op}: lookup_table dim 0 ({lt.shape[0]}) != {lengths_name} dim 0 ({nb})")
    return ro, ln, lt


def check_kv_blocks(op: str, kv_blocks: Any, layer_idx: int) -> BufferType:
    """Check the kv_blocks buffer's layout and that `layer_idx` names one of its layers."""
    kv = expect_buffer(op, "kv_blocks", kv_blocks)
    if kv.rank != 6:
        raise ValueError(f"{op}: kv_blocks must have rank 6 {KV_BLOCKS_LAYOUT}, got rank {kv.rank}")
    if kv.shape[1] != Dim(2):
        raise ValueError(f"{op}: kv_blocks dim 1 (key/value) must be 2, got {kv.shape[1]}")
    expect_dtype(op, "kv_blocks", kv, [DType.float32, DType.float16, DType.bfloat16])
    num_layers = kv.shape[2]
    if layer_idx < 0 or (num_layers.is_static and layer_idx >= num_layers.value):
        raise ValueError(f"{op}: layer_idx must be in 0..{num_layers}-1, got {layer_idx=}")
    return kv


def check_heads_match_cache(op: str, operand: str, x: TensorType, kv: BufferType, *, heads_dim: int) -> None:
    """Check `x`'s head dim (last) against the cache and, if `heads_dim` >= 0, its kv heads."""
    if x.shape[-1] != kv.shape[5]:
        raise ValueError(f"{op}: {operand} head_dim ({x.shape[-1]}) != kv_blocks head_dim ({kv.shape[5]})")
    if heads_dim >= 0 and x.shape[heads_dim] != kv.shape[4]:
        raise ValueError(
            f"{op}: {operand} n_kv_heads ({x.shape[heads_dim]}) != kv_blocks n_kv_heads ({kv.shape[4]})"
        )
    if x.dtype != kv.dtype:
        raise ValueError(f"{op}: {operand} dtype {x.dtype.name} != kv_blocks dtype {kv.dtype.name}")
    operands: dict[str, TensorType | BufferType] = {operand: x, "kv_blocks": kv}
    expect_same_device(op, **operands)


def check_even_head_dim(op: str, d: Dim) -> None:
    """Rope pairs dims, so the head dim must be even (when static)."""
    if d.is_static and d.value % 2:
        raise ValueError(f"{op}: head dim must be even, got d={d.value}")


# --- torch index arithmetic -----------------------------------------------------------
def as_index(t: torch.Tensor) -> torch.Tensor:
    """uint32 metadata as int64 (torch indexes with int64 only)."""
    return t.to(torch.int64)


def token_batch(row_offsets: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The sequence each of the `num_tokens` rows belongs to, `[T]` int64."""
    t = torch.arange(num_tokens, device=row_offsets.device, dtype=torch.int64)
    return (t[:, None] >= row_offsets[1:][None]).sum(-1)


def token_positions(
    row_offsets: torch.Tensor, lengths: torch.Tensor, num_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(batch, position)` of each row: both `[T]` int64 (metadata already int64).

    On CUDA, rows past `row_offsets[B]` count as the last sequence's instead of indexing past
    `lengths` (a device assert): the eager runtime's device check refuses such row offsets."""
    batch = token_batch(row_offsets, num_tokens)
    if row_offsets.is_cuda:
        if lengths.shape[0] == 0:  # no sequence (rows > 0): a step the device check refuses
            lengths = lengths.new_zeros(1)
        batch = batch.clamp(max=lengths.shape[0] - 1)
    t = torch.arange(num_tokens, device=row_offsets.device, dtype=torch.int64)
    pos = lengths.index_select(0, batch) + t - row_offsets.index_select(0, batch)
    return batch, pos


def cache_rows(
    kv_shape: torch.Size,
    lookup_table: torch.Tensor,
    batch: torch.Tensor,
    pos: torch.Tensor,
    *,
    layer_idx: int,
    key_or_value: int,
) -> torch.Tensor:
    """Row indices into `kv_blocks.reshape(-1, n_kv_heads, head_dim)` for (batch, pos) pairs.

    Block ids are clamped into range so that a gather never reads out of bounds; callers
    mask (attention) or check beforehand (the eager store) the positions that need it.
    """
    num_blocks, _, num_layers, page_size = kv_shape[0], kv_shape[1], kv_shape[2], kv_shape[3]
    max_pages = lookup_table.shape[1]
    page = torch.clamp(pos // page_size, 0, max_pages - 1)
    block = lookup_table.reshape(-1).index_select(0, (batch * max_pages + page).reshape(-1))
    block = torch.clamp(block.reshape(pos.shape), 0, num_blocks - 1)
    return ((block * 2 + key_or_value) * num_layers + layer_idx) * page_size + pos % page_size


def write_rows(
    kv_blocks: torch.Tensor, rows: torch.Tensor, x: torch.Tensor, *, inplace: bool
) -> torch.Tensor:
    """Write `x [T, Hkv, D]` into the flattened cache rows; in place or as a new version."""
    n_kv_heads, head_dim = kv_blocks.shape[4], kv_blocks.shape[5]
    flat = (
        kv_blocks.view(-1, n_kv_heads, head_dim) if inplace else kv_blocks.reshape(-1, n_kv_heads, head_dim)
    )
    values = x.to(kv_blocks.dtype)
    if inplace:
        flat.index_put_((rows,), values)
        return kv_blocks
    return torch.index_put(flat, (rows,), values).reshape(kv_blocks.shape)


def is_tracing(*tensors: torch.Tensor) -> bool:
    """True under fake tensors, proxy tracing (make_fx), torch.compile or a CUDA-graph
    capture, where data-dependent checks can neither read values nor raise."""
    from torch._subclasses.fake_tensor import is_fake
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    if torch.compiler.is_compiling() or get_proxy_mode() is not None:
        return True
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return True  # reading values would sync the stream inside a CUDA-graph capture
    return any(is_fake(t) for t in tensors)


def check_store_capacity(
    op: str,
    kv_blocks: torch.Tensor,
    x: torch.Tensor,
    row_offsets: torch.Tensor,
    lengths: torch.Tensor,
    lookup_table: torch.Tensor,
) -> None:
    """Eager refusal before any write: every new position of every sequence must fall in a
    page of its lookup row that names a real block. Raises ValueError naming the sequence."""
    if is_tracing(kv_blocks, x, row_offsets, lengths, lookup_table):
        return
    if not kv_blocks.is_contiguous():
        raise ValueError(
            f"{op}: kv_blocks must be contiguous (it is written in place), got strides "
            f"{list(kv_blocks.stride())} for shape {list(kv_blocks.shape)}"
        )
    rows = x.shape[0]
    # One host copy of each metadata tensor (a single sync each on a GPU), then plain Python.
    ro, ln, lt = (as_index(t).tolist() for t in (row_offsets, lengths, lookup_table))
    num_blocks, page_size, max_pages = kv_blocks.shape[0], kv_blocks.shape[3], lookup_table.shape[1]
    if len(ro) != len(ln) + 1 or len(lt) != len(ln):
        raise ValueError(
            f"{op}: input_row_offsets has {len(ro)} entries and lookup_table {len(lt)} rows; they need "
            f"batch + 1 = {len(ln) + 1} and batch = {len(ln)} (cache_lengths has {len(ln)})"
        )
    if ro[-1] != rows or ro[0] != 0 or any(a > b for a, b in zip(ro, ro[1:], strict=False)):
        raise ValueError(f"{op}: input_row_offsets {ro} must rise from 0 to the {rows} rows of x")
    for b, cached in enumerate(ln):
        new = ro[b + 1] - ro[b]
        if new == 0:
            continue
        last = cached + new - 1
        pages = lt[b]
        valid = next((i for i, blk in enumerate(pages) if blk >= num_blocks), max_pages)
        if last // page_size >= valid:
            raise ValueError(
                f"{op}: sequence {b} would write position {last}, past its capacity of "
                f"{valid * page_size} tokens ({valid} pages of {page_size}; lookup_table row {pages}, "
                f"num_blocks {num_blocks})"
            )
