"""The device-side capacity check (Triton, interpreted on the CPU) against the host rules.

The expected words are written from the paged layout: a sequence with new tokens needs the
pages 0 .. (cached + new - 1) // page_size of its lookup row to name blocks < num_blocks.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels._interp import load_interpreted

kernel = load_interpreted("write_flag")
U32 = torch.uint32


def _check(tokens, cached, lookup, *, num_blocks=8, page_size=4, rows=None, offsets=None, flag=None):
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
def test_check__an_overflow_sets_the_words_the_host_message_needs(tokens, cached, lookup, words) -> None:
    assert _check(tokens, cached, lookup) == words


def test_check__row_offsets_that_fall_or_miss_the_row_count_set_code_2() -> None:
    assert _check([2, 1], [0, 0], [[0, 1], [2, 3]], offsets=[0, 2, 1], rows=1)[:5] == [2, 1, 0, 1, 1]
    assert _check([2, 1], [0, 0], [[0, 1], [2, 3]], rows=5)[:5] == [2, -1, 0, 3, 5]


def test_check__the_first_refusal_stays_until_the_host_clears_it() -> None:
    flag = torch.tensor([1, 0, 8, 2, -1, 8, 4, 3])
    assert _check([1], [0], [[0, 1]], flag=flag) == [1, 0, 8, 2, -1, 8, 4, 3]  # a valid step
    assert _check([1], [9], [[0, 1]], flag=flag) == [1, 0, 8, 2, -1, 8, 4, 3]  # a new overflow
