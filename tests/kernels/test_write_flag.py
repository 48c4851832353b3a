"""The device-side capacity check (Triton, interpreted on the CPU) against the host rules.

The expected words are written from the paged layout: a sequence with new tokens needs the
pages 0 .. (cached + new - 1) // page_size of its lookup row to name blocks < num_blocks.
"""

from __future__ import annotations

import collections

import pytest
import torch

from fusegraph.compiler.dims import Dim
from tests.kernels._interp import load_interpreted

kernel = load_interpreted("write_flag")
U32 = torch.uint32


def _check(
    tokens: list[int],
    cached: list[int],
    lookup: list[list[int]],
    *,
    num_blocks: int = 8,
    page_size: int = 4,
    rows: int | None = None,
    offsets: list[int] | None = None,
    flag: torch.Tensor | None = None,
) -> list[int]:
    ro = torch.tensor(offsets if offsets is not None else [0, *torch.tensor(tokens).cumsum(0).tolist()])
    flag = torch.zeros(kernel.FLAG_WORDS, dtype=torch.int64) if flag is None else flag
    rows = sum(tokens) if rows is None else rows
    kernel.check_capacity_on_device(
        flag, ro.to(U32), torch.tensor(cached, dtype=U32), torch.tensor(lookup, dtype=U32),
        rows, num_blocks, page_size, op=3,
    )  # fmt: skip
    return flag.tolist()


def test_check__a_step_inside_every_sequence_capacity_leaves_the_flag_clear() -> None:
    # seq 0 writes positions 5..7 (page 1), seq 1 writes nothing, seq 2 writes 0..7 (pages 0, 1)
    assert _check([3, 0, 8], [5, 9, 0], [[0, 1], [99, 99], [2, 3]]) == [0] * 8


@pytest.mark.parametrize(
    ("tokens", "cached", "lookup", "words"),
    [
        # seq 1 reaches position 8 with 2 pages of 4: past the row (no entry past num_blocks)
        ([1, 2], [0, 7], [[0, 1], [2, 3]], [1, 1, 8, 2, -1, 8, 4, 3]),
        # seq 0's second page names block 8 of 8: capacity 4 tokens; entry 1 is 8
        ([2, 1], [3, 0], [[0, 8], [2, 3]], [1, 0, 4, 1, 8, 8, 4, 3]),
        # both overflow: the first sequence is reported
        ([1, 1], [8, 8], [[0, 1], [2, 3]], [1, 0, 8, 2, -1, 8, 4, 3]),
    ],
    ids=["past_the_row", "entry_past_num_blocks", "first_of_two"],
)
def test_check__an_overflow_sets_the_words_the_host_message_needs(
    tokens: list[int], cached: list[int], lookup: list[list[int]], words: list[int]
) -> None:
    assert _check(tokens, cached, lookup) == words


def test_check__row_offsets_that_fall_or_miss_the_row_count_set_code_2() -> None:
    assert _check([2, 1], [0, 0], [[0, 1], [2, 3]], offsets=[0, 2, 1], rows=1)[:5] == [2, 1, 0, 1, 1]
    assert _check([2, 1], [0, 0], [[0, 1], [2, 3]], rows=5)[:5] == [2, -1, 0, 3, 5]


def test_check__the_first_refusal_stays_until_the_host_clears_it() -> None:
    flag = torch.tensor([1, 0, 8, 2, -1, 8, 4, 3])
    assert _check([1], [0], [[0, 1]], flag=flag) == [1, 0, 8, 2, -1, 8, 4, 3]  # a valid step
    assert _check([1], [9], [[0, 1]], flag=flag) == [1, 0, 8, 2, -1, 8, 4, 3]  # a new overflow


def _check_more(
    tokens: list[int],
    cached: list[int],
    lookup: list[list[int]] | None,
    *,
    max_pos: int | None = None,
    owners: bool = True,
    num_blocks: int = 8,
    page_size: int = 4,
) -> list[int]:
    ro = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()])
    flag = torch.zeros(kernel.FLAG_WORDS, dtype=torch.int64)
    scratch = torch.full((num_blocks,), 7, dtype=torch.int32) if owners else None  # stale words
    kernel.check_capacity_on_device(
        flag, ro.to(U32), torch.tensor(cached, dtype=U32), None if lookup is None else torch.tensor(lookup, dtype=U32),
        sum(tokens), num_blocks, page_size, op=3, owners=scratch, max_pos=max_pos, rope_op=5, offsets_op=6,
    )  # fmt: skip
    return flag.tolist()


@pytest.mark.parametrize(
    ("tokens", "cached", "lookup", "words"),
    [
        # seq 1 writes position 5 (page 1 = block 2), which seq 0 writes at position 4..6
        ([3, 1], [4, 5], [[0, 2], [1, 2]], [4, 1, 0, 2, -1, 8, 4, 3]),
        # seq 2 writes blocks 5 and 3; seq 1 writes 3 first: the later writer and its first page
        ([1, 1, 5], [0, 0, 3], [[1, 9], [3, 9], [5, 3]], [4, 2, 1, 3, -1, 8, 4, 3]),
        # the earliest owner is named when three sequences write one block
        ([1, 1, 1], [0, 0, 0], [[6], [6], [6]], [4, 1, 0, 6, -1, 8, 4, 3]),
    ],
    ids=["decode_into_a_neighbour", "first_page_of_the_later_writer", "three_writers"],
)
def test_check__two_sequences_writing_one_block_set_code_4(
    tokens: list[int], cached: list[int], lookup: list[list[int]], words: list[int]
) -> None:
    assert _check_more(tokens, cached, lookup) == words


def test_check__a_long_write_among_decodes_is_checked_to_its_last_page() -> None:
    # the tiles are as wide as an average sequence's pages (2 here); seq 4 writes 6 pages, and
    # its last one is block 0, which seq 0 writes
    rows = [[0, 15, 15, 15, 15, 15], [1] + [15] * 5, [2] + [15] * 5, [3] + [15] * 5, [10, 11, 12, 13, 14, 0]]
    words = _check_more([1, 1, 1, 1, 20], [0, 0, 0, 0, 2], rows, num_blocks=16)
    assert words == [4, 4, 0, 0, -1, 16, 4, 3]
    rows[4][5] = 9
    assert _check_more([1, 1, 1, 1, 20], [0, 0, 0, 0, 2], rows, num_blocks=16) == [0] * 8


def test_check__shared_blocks_that_only_one_sequence_writes_are_allowed() -> None:
    # prefix sharing: both read block 0 (cached), each writes its own next page; seq 1 writes nothing
    assert _check_more([1, 0, 2], [4, 4, 4], [[0, 1], [0, 9], [0, 2]]) == [0] * 8
    assert _check_more([1, 1], [0, 0], [[3], [3]], owners=False) == [0] * 8  # not asked to check


def test_check__a_position_past_the_rope_table_sets_code_3_before_the_pages() -> None:
    # seq 1 reaches position 6 of a 6-row table; its page check would also fail (code 1)
    assert _check_more([1, 2], [0, 5], [[0, 1], [2, 9]], max_pos=6) == [3, 1, 6, 6, -1, 0, 0, 5]
    assert _check_more([1, 2], [0, 3], [[0, 1], [2, 3]], max_pos=6) == [0] * 8  # last position 4
    assert _check_more([2], [7], None, max_pos=8) == [3, 0, 8, 8, -1, 0, 0, 5]  # rope only, no pages
    # row offsets come first, named by their own op
    assert _check_more([2], [7], None, max_pos=8, owners=False)[0] == 3
    flag = torch.zeros(kernel.FLAG_WORDS, dtype=torch.int64)
    kernel.check_capacity_on_device(
        flag, torch.tensor([0, 3], dtype=U32), torch.tensor([9], dtype=U32), None, 2, 8, 4, 3,
        max_pos=4, rope_op=5, offsets_op=6,
    )  # fmt: skip
    assert flag.tolist() == [2, -1, 0, 3, 2, 0, 0, 6]


def test_check__random_steps_give_the_host_checks_first_refusal() -> None:
    from fusegraph.runtime.input_checks import InputChecks, MetadataUse  # the host rules
    from fusegraph.runtime.kernels.write_flag import op_id  # the ids refusal_message reads
    from fusegraph.runtime.write_guard import refusal_message

    gen = torch.Generator().manual_seed(14)
    op = op_id("fg.kv_cache.store")
    use = MetadataUse("fg.kv_cache.store", Dim("T"), 0, 1, 2, 3, writes=True, max_pos=12)
    host = InputChecks([use], [])
    codes: collections.Counter[int] = collections.Counter()
    for _ in range(40):
        batch = int(torch.randint(1, 4, (1,), generator=gen))
        tokens = torch.randint(0, 4, (batch,), generator=gen)
        cached = torch.randint(0, 12, (batch,), generator=gen)
        lookup = torch.randint(0, 9, (batch, 3), generator=gen)  # 9: past num_blocks 8
        ro = torch.cat([torch.zeros(1, dtype=torch.int64), tokens.cumsum(0)])
        kv = torch.zeros(8, 2, 1, 4, 1, 1)
        inputs = [t.to(U32) for t in (ro, cached, lookup)]
        flag = torch.zeros(kernel.FLAG_WORDS, dtype=torch.int64)
        kernel.check_capacity_on_device(
            flag, *inputs, int(ro[-1]), 8, 4, op, owners=torch.zeros(8, dtype=torch.int32), max_pos=12,
        )  # fmt: skip
        try:
            host.check([*inputs, kv], {"T": int(ro[-1])})
            expected = None
        except ValueError as err:
            expected = str(err)
        got = None if flag[0] == 0 else refusal_message(flag.tolist()).split("; refused on the device")[0]
        assert got == expected, (tokens.tolist(), cached.tolist(), lookup.tolist())
        codes[int(flag[0])] += 1
    assert set(codes) == {0, 1, 3, 4}, codes  # valid steps, pages, rope and shared blocks: all exercised
