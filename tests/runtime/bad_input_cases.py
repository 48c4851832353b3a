"""The bad-metadata cases every backend must refuse alike (CPU host checks, IREE, CUDA device
checks): the calls, the messages, and the caches they must leave byte-identical."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fusegraph.ops._ragged import NO_BLOCK
from tests.lowering._graphs import SMALL

__all__ = [
    "CACHE_SHAPE",
    "CASES",
    "U32",
    "Call",
    "good_call",
    "message_for",
    "sentinel_cache",
    "strided_cache",
]

U32 = torch.uint32
CACHE_SHAPE = [SMALL.num_blocks, 2, 1, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim]


@dataclass
class Call:
    """The inputs of one call: x [T, hidden], row offsets, kv_blocks, cache lengths, lookup."""

    rows: int
    row_offsets: list[int]
    cache_lengths: list[int]
    lookup: list[list[int]]
    kv: Callable[[], torch.Tensor] | None = None

    def inputs(self, cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = torch.randn(self.rows, SMALL.hidden, generator=torch.Generator().manual_seed(1))
        meta = [torch.tensor(v, dtype=torch.int64).to(U32) for v in (self.row_offsets, self.cache_lengths)]
        lookup = torch.tensor(self.lookup, dtype=torch.int64).to(U32)
        return x, meta[0], cache, meta[1], lookup


def sentinel_cache() -> torch.Tensor:
    return torch.randn(CACHE_SHAPE, generator=torch.Generator().manual_seed(7))


def good_call() -> Call:
    """Sequence 0: 5 cached, 3 new; sequence 1: 2 cached, 1 new; 4 pages of 4 each."""
    return Call(4, [0, 3, 4], [5, 2], [[0, 1, 2, 3], [4, 5, 6, 7]])


def _with(**changes: object) -> Call:
    call = good_call()
    for k, v in changes.items():
        setattr(call, k, v)
    return call


def strided_cache(device: str = "cpu") -> torch.Tensor:
    """The sentinel cache as a view with a stride of 2 in the last dim (not contiguous)."""
    wide = torch.zeros([*CACHE_SHAPE[:-1], 2 * SMALL.head_dim], device=device)
    view = wide[..., ::2]
    view.copy_(sentinel_cache().to(device))
    return view


_NO = NO_BLOCK
_LONG_ROW = list(range(20))  # 80 tokens of capacity: more than the rope table's 64 positions
# case -> (the call, the message it must be refused with): {op} is the first ragged op, {rope}
# the first rope, {store} the first cache write (the unfused chain runs rope before the stores)
CASES: dict[str, tuple[Call, str]] = {
    "overflow_past_lookup_row": (
        _with(cache_lengths=[14, 2]),
        r"{store}: sequence 0 would reach position 16, past its capacity of 16 tokens \(4 pages of 4",
    ),
    "overflow_into_an_unused_page": (
        _with(cache_lengths=[7, 2], lookup=[[0, 1, _NO, _NO], [4, 5, 6, 7]]),
        r"{store}: sequence 0 would reach position 9, past its capacity of 8 tokens .*entry 2 is 4294967295",
    ),
    "cache_length_100000": (
        _with(cache_lengths=[100000, 2]),
        r"{rope}: sequence 0 reaches position 100002, past the rope table's 64 positions .*max_seq_len",
    ),
    "position_past_rope_table_within_capacity": (
        Call(4, [0, 3, 4], [62, 2], [_LONG_ROW, [20, 21, 22, 23] + [_NO] * 16]),
        r"{rope}: sequence 0 reaches position 64, past the rope table's 64 positions",
    ),
    "lookup_entry_past_the_cache": (
        _with(cache_lengths=[5, 4], lookup=[[0, 1, 2, 3], [4, 99, 6, 7]]),
        r"{store}: sequence 1 would reach position 4, past its capacity of 4 tokens .*entry 1 is 99, "
        r"past num_blocks 24",
    ),
    "two_sequences_write_one_block": (
        _with(lookup=[[0, 1, 2, 3], [1, 5, 6, 7]]),
        r"{store}: sequences 0 and 1 both write block 1 of kv_blocks",
    ),
    "row_offsets_not_from_zero": (
        _with(row_offsets=[1, 3, 4]),
        r"{op}: input_row_offsets must rise from 0 to the 4 rows of the input \(first entry 1, last entry 4\)$",
    ),
    "row_offsets_falling": (
        _with(row_offsets=[0, 5, 4]),
        r"{op}: input_row_offsets must rise .* \(first entry 0, last entry 4, entry 2 falls below entry 1\)$",
    ),
    "row_offsets_past_the_rows": (
        _with(row_offsets=[0, 3, 6]),
        r"{op}: input_row_offsets must rise from 0 to the 4 rows of the input \(first entry 0, last entry 6\)$",
    ),
    "row_offsets_of_length_batch": (
        _with(row_offsets=[0, 4]),
        r"{op}: input_row_offsets has 2 entries; it needs batch \+ 1 = 3",
    ),
    "kv_blocks_not_contiguous": (
        _with(kv=strided_cache),
        r"input 2: the buffer must be contiguous",
    ),
}


def message_for(pattern: str, fused: bool) -> str:
    first = "fg.rope_split_store" if fused else "fg.rope"
    store = "fg.rope_split_store" if fused else "fg.kv_cache.store"
    return pattern.format(op=re.escape(first), rope=re.escape(first), store=re.escape(store))
