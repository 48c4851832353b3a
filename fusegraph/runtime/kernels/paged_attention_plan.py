"""The launch plan of the paged attention (`paged_attention.py`): keys a step, key splits and query tiles of a call
(`key_plan`), who merges the key splits (`merges_in_place`) and the rows a program of the split combine kernel merges
(`combine_rows`). Plain Python: the regular
and the interpreted copies of the kernel module share it."""

from __future__ import annotations

import triton

__all__ = ["WIDE_DECODE_PROGRAMS", "combine_rows", "key_plan", "merges_in_place", "wide_decode"]


def combine_rows(n_rows: int, sms: int) -> int:
    """(token, head) rows a program of the split combine merges: 16, or fewer (a power of two) until there is a
    program an SM. At decode batch 1 (32 rows) 16 a program left 2 programs, each streaming 17 splits' partial rows
    through one SM: 3.1 µs of a step's critical path a layer; 32 programs of 1 row take 1.7 (H200, Llama-3-8B).

    Example:
        >>> combine_rows(32, 132), combine_rows(512, 132), combine_rows(8192, 132)
        (1, 2, 16)
    """
    rows = 16
    while rows > 1 and triton.cdiv(n_rows, rows) < sms:
        rows //= 2
    return rows


WIDE_DECODE_PROGRAMS = 128
"""From this many (sequence, kv head) programs a decode step takes 64-key steps, about 4 programs an SM and exactly
its T query tiles (`key_plan`). H200, Llama-3-8B heads (8 kv heads), ctx 2048, the cache rotated past L2, attention +
combine, µs (2026-12-03, `docs/benchmarks.md`; the earlier plan first): batch 16 52.0 → 42.3, 32 78.3 → 73.7, 64
151.5 → 132.9; the 32-layer decode step 1.3% and 3.2% faster at batch 16 and 32 (steps back to back), 7.5% at 64
(one step synchronized). Below it the 128-key plan stayed: 64-key steps at 3 stages were 4-5% faster alone at
batch 2 and 8 in one call, slower at 4, and the one decode step timed with them there (batch 4) was 1.2% slower."""


def wide_decode(t_rows: int, batch: int, n_kv_heads: int) -> bool:
    """Whether a call is a decode step (at most a row a sequence) of `WIDE_DECODE_PROGRAMS` (sequence, kv head)
    programs or more: the plan of 64-key steps and exact tiles (`key_plan`), whose splits merge in place
    (`merges_in_place`)."""
    return t_rows <= batch and t_rows * n_kv_heads >= WIDE_DECODE_PROGRAMS


def key_plan(
    t_rows: int, batch: int, block_m: int, n_kv_heads: int, head_dim: int, capacity: int, sms: int
) -> tuple[int, int, bool]:
    """(keys a step, key splits, whether the grid holds exactly T query tiles) for `paged_attention_triton`.

    Prefill (more rows than sequences): 64-key steps, one split once the query tiles fill the SMs. Decode: the
    (sequence, kv head) programs alone leave SMs idle, so each sequence's keys are split, down to one key step a
    split: below `WIDE_DECODE_PROGRAMS` programs in 128-key steps and about 2 programs an SM (H200, ctx 2048, bs 1:
    17 splits 11.8 µs against 6 of 256+ keys 15.9; bs 4: 9 splits 17.2 against 19.6), from it in 64-key steps and
    about 4 programs an SM. Head dims past 128 take 32-key steps.

    The grid's `ceil(T / BLOCK_M) + B` query tiles bound the tiles of any ragged batch; at decode (T = B) it holds a
    dead program beside each live one, and the block scheduler places the live ones by where the dead ones fall. T
    tiles (a tile holds at least one row) are exact there, and measured faster for one sequence (H200, ctx 2048:
    10.3-10.7 → 9.6-10.0 µs alone, the decode step 1.4% faster) and in the wide plan, but slower for 2 to 8 sequences
    (3-11% alone, 0.8-1.0% on the step), so those keep the bound.

    Example:
        >>> [key_plan(b, b, 4, 8, 128, 2176, 132) for b in (1, 4, 16, 32, 64, 128)]
        [(128, 17, True), (128, 9, False), (64, 4, True), (64, 2, True), (64, 1, True), (64, 1, True)]
        >>> key_plan(512, 4, 16, 8, 128, 2176, 132)
        (64, 1, False)
    """
    decode = t_rows <= batch
    busy = (t_rows if decode else triton.cdiv(t_rows, block_m)) * n_kv_heads  # programs that have rows
    wide = wide_decode(t_rows, batch, n_kv_heads)
    block_n = 32 if head_dim > 128 else 128 if decode and not wide else 64
    splits = 4 * sms // busy if wide else triton.cdiv(2 * sms, busy) if decode and busy < sms else 1
    return block_n, max(1, min(splits, capacity // block_n)), wide or (decode and batch == 1)


def merges_in_place(t_rows: int, batch: int, n_kv_heads: int) -> bool:
    """Whether a split decode call's partial states are merged by each tile's last split program (an atomic ticket,
    no second kernel) rather than by the combine kernel: in the wide decode plan (`WIDE_DECODE_PROGRAMS` (sequence,
    kv head) programs or more). H200, Llama-3-8B heads, ctx 2048, 2026-12-03 (`docs/benchmarks.md`), µs alone, in
    place against the combine kernel: batch 16 44.0 against 53.1, 32 74.4 against 74.9 (64 has one split); the
    32-layer decode step at batch 16 3.809-3.816 against 3.837 ms back to back, two rounds. Below it the combine
    kernel's 32+ programs merge faster than one program a tile does after its ticket: batch 1 9.6 against 10.7, 2 14.9
    against 15.8, 4 18.9 against 20.7, 8 29.1 against 29.2; the batch-1 step 2.177-2.180 against 2.182-2.189 ms.

    Example:
        >>> merges_in_place(1, 1, 8), merges_in_place(16, 16, 8), merges_in_place(512, 4, 8)
        (False, True, False)
    """
    return wide_decode(t_rows, batch, n_kv_heads)
