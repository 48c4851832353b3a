"""Act-order for the Triton GPTQ matmul (`gptq_matmul.py`), MAX's way: the weight rows sorted by group once (cached
per weight), x's columns permuted per call.

Plain torch, shared by the regular and the interpreter-mode copies of `gptq_matmul.py` (through `gptq_plan`).
"""

from __future__ import annotations

import torch

from fusegraph.runtime.kernels.tensor_cache import UNSEEN, derived

__all__ = ["act_order_prepare"]


def _repack_rows(qweight: torch.Tensor, perm: torch.Tensor, bits: int) -> torch.Tensor:
    """qweight with its unpacked rows reordered: row k of the result is row perm[k] of the input."""
    pack = 32 // bits
    rows, n = qweight.shape
    shifts = torch.arange(pack, device=qweight.device, dtype=torch.int64) * bits
    out = torch.empty_like(qweight)
    for c in range(0, n, 1024):  # column chunks bound the int64 temporaries
        w = qweight[:, c : c + 1024].to(torch.int64) & 0xFFFFFFFF
        q = ((w[:, None, :] >> shifts[None, :, None]) & ((1 << bits) - 1)).reshape(rows * pack, -1)
        q = q.index_select(0, perm).reshape(rows, pack, -1)
        word = (q << shifts[None, :, None]).sum(1)
        out[:, c : c + 1024] = torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)
    return out


def act_order_prepare(
    qweight: torch.Tensor, g_idx: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(qweight with rows sorted by group, perm) for an act-order g_idx, or None.

    perm = argsort(g_idx) (stable); row k of the new qweight is row perm[k] of the old, so
    x[:, perm] @ W_new == x @ W, and the new rows' groups are k // group_size, which lets the
    per-tile kernels run. None when the sorted g_idx is not k // group_size (a g_idx whose
    groups are not all group_size rows): the caller then gathers scales through g_idx.
    Cached per (qweight, g_idx) pair until either is written (`tensor_cache.derived`). The first look costs a
    host sync, so during CUDA-graph capture an unseen pair returns None (the g_idx path: always correct).
    """

    def build() -> tuple[torch.Tensor, torch.Tensor] | None:
        k = g_idx.numel()
        perm = torch.argsort(g_idx.to(torch.int64), stable=True)
        sorted_groups = g_idx.to(torch.int64).index_select(0, perm)
        trivial = torch.arange(k, device=g_idx.device) // group_size
        return (_repack_rows(qweight, perm, bits), perm) if torch.equal(sorted_groups, trivial) else None

    prepared = derived("act-order rows", (qweight, g_idx), build, extra=(bits, group_size))
    return None if prepared is UNSEEN else prepared
