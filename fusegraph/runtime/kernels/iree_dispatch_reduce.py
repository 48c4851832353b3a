"""A Triton kernel of the IREE custom dispatches (`iree_dispatch_gptq.py`): the split-K
reduction of one piece of a GPTQ matmul whose weight is a concatenation along N, written into
its columns of the whole output (eager folds such concatenations; IREE would copy them per call).

Example (what the dispatch launches, grid `ceil(M * N_PIECE / BLOCK)`):
    >>> _reduce_into_columns_kernel[grid](ws, out, M, N_PIECE=1024, N_OUT=6144, COL0=4096, SPLIT_K=8, BLOCK=64)
"""

# ruff: noqa: N803 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _reduce_into_columns_kernel(ws_ptr, out_ptr, M, N_PIECE: tl.constexpr, N_OUT: tl.constexpr,
                                COL0: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """out[m, COL0 + n] = Σ_s ws[s, m, n] in a fixed order (as `_splitk_reduce_kernel`), for a
    piece of N_PIECE columns of an output N_OUT wide."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    numel = M * N_PIECE
    ok = offs < numel
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(ws_ptr + s * numel + offs, mask=ok, other=0.0)
    row = offs // N_PIECE
    col = offs % N_PIECE
    tl.store(out_ptr + row * N_OUT + COL0 + col, acc.to(out_ptr.dtype.element_ty), mask=ok)
