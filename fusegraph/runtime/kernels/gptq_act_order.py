"""Act-order for the Triton GPTQ matmul (`gptq_matmul.py`), MAX's way: the weight rows sorted by group once (cached
per weight), x's columns permuted per call.

Plain torch, shared by the regular and the interpreter-mode copies of `gptq_matmul.py` (through `gptq_plan`).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

__all__ = ["act_order_prepare"]

_ACT_ORDER: dict[
    tuple[int, int], tuple[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor] | None, Any, Any]
] = {}


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


def _drop(key: tuple[int, int], ref: weakref.ref[torch.Tensor]) -> None:
    """Forget the entry of a freed qweight, unless another tensor at its address took the key since."""
    hit = _ACT_ORDER.get(key)
    if hit is not None and hit[2] is ref:
        del _ACT_ORDER[key]


def act_order_prepare(
    qweight: torch.Tensor, g_idx: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(qweight with rows sorted by group, perm) for an act-order g_idx, or None.

    perm = argsort(g_idx) (stable); row k of the new qweight is row perm[k] of the old, so
    x[:, perm] @ W_new == x @ W, and the new rows' groups are k // group_size, which lets the
    per-tile kernels run. None when the sorted g_idx is not k // group_size (a g_idx whose
    groups are not all group_size rows): the caller then gathers scales through g_idx.
    Cached per (qweight, g_idx) storage and version. The first look costs a host sync, so
    during CUDA-graph capture an unseen pair returns None (the g_idx path: always correct).
    """
    key = (qweight.data_ptr(), g_idx.data_ptr())
    stamp = (qweight._version, g_idx._version, tuple(qweight.shape), g_idx.numel(), bits, group_size,
             qweight.device)  # fmt: skip
    hit = _ACT_ORDER.get(key)
    # the entry must be for these very tensors: a freed tensor's address can be reused
    if hit is not None and hit[0] == stamp and hit[2]() is qweight and hit[3]() is g_idx:
        return hit[1]
    if qweight.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return None
    k = g_idx.numel()
    perm = torch.argsort(g_idx.to(torch.int64), stable=True)
    sorted_groups = g_idx.to(torch.int64).index_select(0, perm)
    trivial = torch.arange(k, device=g_idx.device) // group_size
    result = None
    if torch.equal(sorted_groups, trivial):
        result = (_repack_rows(qweight, perm, bits), perm)
    ref = weakref.ref(qweight)
    weakref.finalize(qweight, _drop, key, ref)
    _ACT_ORDER[key] = (stamp, result, ref, weakref.ref(g_idx))
    return result
