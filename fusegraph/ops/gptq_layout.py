"""The repacked ("tiled") GPTQ layout that the CUDA kernels stream (`runtime/kernels/gptq_tiled.py`):
`repack` from AutoGPTQ/GPTQModel tensors, `unrepack` back to integers, and the aten matmul on it.

Layout (K in features, N out features, G groups; CB = 8 for 8-bit and 4 for 2/3/4-bit, whose
values sit in 4-bit containers; P = 32/CB values a word; R = 128/P):
    qweight_t int32 [N/64, K/P, 64]  strip s = columns 64s..64s+63, contiguous over K; in 128-row
                                     block b, word row r holds in slot i (bits [i·CB, (i+1)·CB))
                                     the value of sorted row k = 128b + i·R + r
    qzeros_t  int32 [G, N·CB/32]     the stored zeros (z − 1 for v1, z for v2) packed along N at
                                     CB bits; written out for sym checkpoints without qzeros
    perm      int32 [K]              act-order only: sorted row k is checkpoint row perm[k]
                                     (argsort of g_idx, stable); the scales keep their [G, N]
W_sorted[k, n] = (q_t[k, n] − z[k // group_size, n])·scales[k // group_size, n], and
x @ W == x[:, perm] @ W_sorted.

Example:
    >>> t = pack(torch.randn(256, 512), bits=4, group_size=128, sym=False, desc_act=True)
    >>> r = repack(t["qweight"], t["qzeros"], t["g_idx"], bits=4, group_size=128, sym=False,
    ...            desc_act=True)                      # {"qweight": ..., "qzeros": ..., "perm": ...}
    >>> q, z = unrepack(r["qweight"], r["qzeros"], r["perm"], bits=4)   # the checkpoint's integers
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusegraph.ops.gptq_packing import pack_rows, unpack_rows

KB, NB = 128, 64
_OP = "fg.gptq.repack"


def container_bits(bits: int) -> int:
    """Bits a value takes in the repacked layout: 8 for 8-bit, 4 for 2, 3 and 4 bits."""
    return 8 if bits == 8 else 4


def layout_error(k: int, n: int, group_size: int) -> str | None:
    """Why K, N and group_size cannot take the tiled layout, or None when they can."""
    if k % KB:
        return f"K ({k}) must be a multiple of {KB}"
    if n % NB:
        return f"N ({n}) must be a multiple of {NB}"
    if group_size != -1 and (group_size <= 0 or group_size % KB or k % group_size):
        return f"group_size ({group_size}) must be -1 or a multiple of {KB} dividing K ({k})"
    return None


def _to_int32(words: Tensor) -> Tensor:
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def tile_rows(q: Tensor, bits: int) -> Tensor:
    """Integers q [K, N] (rows already sorted) -> qweight_t int32 [N/64, K/P, 64]."""
    cb = container_bits(bits)
    p, (k, n) = 32 // cb, q.shape
    r, h = KB // p, p // 2
    # row 128b + 2(jR + r) + e sits in slot e·P/2 + j of word row bR + r
    qv = (
        q.to(torch.int64).reshape(k // KB, h, r, 2, n // NB, NB).permute(4, 0, 2, 5, 3, 1)
    )  # [S, B, R, 64, 2, P/2]
    shifts = torch.arange(p, device=q.device, dtype=torch.int64) * cb
    words = (qv.reshape(n // NB, k // KB, r, NB, p) << shifts).sum(-1)
    return _to_int32(words.reshape(n // NB, k // p, NB))


def untile_rows(qweight_t: Tensor, bits: int) -> Tensor:
    """Inverse of `tile_rows`: int64 [K, N] in the layout's (sorted) row order."""
    cb = container_bits(bits)
    p = 32 // cb
    s, rows, _ = qweight_t.shape
    k, r, h = rows * p, KB // p, p // 2
    u = (qweight_t.to(torch.int64) & 0xFFFFFFFF).reshape(s, k // KB, r, NB)
    shifts = torch.arange(p, device=qweight_t.device, dtype=torch.int64) * cb
    q = ((u[..., None] >> shifts) & ((1 << cb) - 1)).reshape(s, k // KB, r, NB, 2, h)
    return q.permute(1, 5, 2, 4, 0, 3).reshape(k, s * NB)


def act_order_perm(g_idx: Tensor, group_size: int) -> Tensor:
    """argsort(g_idx) (stable), checked to give whole groups of group_size rows, as int32 [K]."""
    k = g_idx.numel()
    perm = torch.argsort(g_idx.to(torch.int64), stable=True)
    want = torch.arange(k, device=g_idx.device) // (k if group_size == -1 else group_size)
    if not torch.equal(g_idx.to(torch.int64).index_select(0, perm), want):
        raise ValueError(f"{_OP}: g_idx does not sort into groups of group_size ({group_size}) rows")
    return perm.to(torch.int32)


def repack(
    qweight: Tensor,
    qzeros: Tensor | None,
    g_idx: Tensor | None,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    desc_act: bool,
    zero_format: str = "v1",
    num_groups: int | None = None,
) -> dict[str, Tensor]:
    """AutoGPTQ tensors -> the tiled layout: {"qweight", "qzeros"} and "perm" when desc_act.

    Args:
        qweight: int32 [K*bits/32, N].
        qzeros: int32 [G, N*bits/32], or None (needs sym: z = 2**(bits-1) is written out).
        g_idx: int32 [K] or None. With desc_act the rows are sorted by it; without, it must be
            k // group_size (checked: a ValueError names the op otherwise).
        bits, group_size, sym, desc_act, zero_format: as in `fg.qmatmul.gptq`.
        num_groups: G, used when qzeros is None (default K // group_size).

    Returns:
        {"qweight": int32 [N/64, K/P, 64], "qzeros": int32 [G, N*CB/32]} (+ "perm": int32 [K]).
    """
    q = unpack_rows(qweight, bits)
    k, n = q.shape
    if (why := layout_error(k, n, group_size)) is not None:
        raise ValueError(f"{_OP}: {why}")
    groups = num_groups or (1 if group_size == -1 else k // group_size)
    out: dict[str, Tensor] = {}
    if desc_act:
        if g_idx is None:
            raise ValueError(f"{_OP}: desc_act=True requires g_idx")
        perm = act_order_perm(g_idx, group_size)
        q = q.index_select(0, perm.to(torch.int64))
        out["perm"] = perm
    elif g_idx is not None:
        trivial = torch.arange(k, device=g_idx.device) // (k if group_size == -1 else group_size)
        if not torch.equal(g_idx.to(torch.int64), trivial):
            raise ValueError(f"{_OP}: desc_act=False but g_idx is not k // group_size")
    if qzeros is not None:
        stored = unpack_rows(qzeros.t(), bits).t()
    elif sym:
        z = 1 << (bits - 1)
        stored = torch.full(
            (groups, n), z - 1 if zero_format == "v1" else z, dtype=torch.int64, device=q.device
        )
    else:
        raise ValueError(f"{_OP}: qzeros may be absent only when sym=True")
    out["qweight"] = tile_rows(q, bits)
    out["qzeros"] = pack_rows(stored.t().contiguous(), container_bits(bits)).t().contiguous()
    return {key: out[key] for key in ("qweight", "qzeros", "perm") if key in out}


def unrepack(
    qweight_t: Tensor, qzeros_t: Tensor, perm: Tensor | None, *, bits: int, zero_format: str = "v1"
) -> tuple[Tensor, Tensor]:
    """The checkpoint's integers back: (q int32 [K, N] in checkpoint row order, z int32 [G, N])."""
    q = untile_rows(qweight_t, bits)
    if perm is not None:
        q = torch.empty_like(q).index_copy_(0, perm.to(torch.int64), q)
    z = unpack_rows(qzeros_t.t(), container_bits(bits)).t()
    if zero_format == "v1":
        z = z + 1
    return q.to(torch.int32), z.to(torch.int32)


def qmatmul_tiled_decomposed(
    x: Tensor,
    qweight_t: Tensor,
    scales: Tensor,
    qzeros_t: Tensor,
    perm: Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str = "v1",
) -> Tensor:
    """`x @ W` on the tiled layout with aten ops (the CPU implementation): x[:, perm] @ W_sorted."""
    q = untile_rows(qweight_t, bits)
    k = q.shape[0]
    z = unpack_rows(qzeros_t.t(), container_bits(bits)).t()
    if zero_format == "v1":
        z = z + 1
    groups = torch.arange(k, device=q.device) // (k if group_size == -1 else group_size)
    w = (q - z.index_select(0, groups)).to(torch.float32) * scales.to(torch.float32).index_select(0, groups)
    if perm is not None:
        x = x.index_select(1, perm.to(torch.int64))
    return torch.matmul(x, w.to(x.dtype))
