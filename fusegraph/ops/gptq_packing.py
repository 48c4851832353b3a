"""GPTQ tensors in AutoGPTQ/GPTQModel layout: bit packing, round-to-nearest `pack`,
`unpack`, `dequantize` and the pure-aten matmul that `fg.qmatmul.gptq` decomposes to.

Layout (K = in features, N = out features, G = groups):
    qweight int32 [K*bits/32, N]   q[k, n] packed along k
    qzeros  int32 [G, N*bits/32]   z[g, n] packed along n (v1 stores z - 1, v2 stores z)
    scales  f16   [G, N]
    g_idx   int32 [K]              group of input row k

Packing is little-endian within an int32: value i of a word sits at bits
[i*bits, (i+1)*bits). For 3 bits the words form one little-endian bit stream, so 32
values fill 3 words and values 10 and 21 straddle a word boundary (AutoGPTQ's scheme).
Dequantization is W[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n].

Example:
    >>> t = pack(torch.randn(64, 128), bits=4, group_size=32, sym=False)
    >>> w = dequantize(t["qweight"], t["scales"], t["qzeros"], t["g_idx"], bits=4,
    ...                group_size=32, sym=False)              # [128, 64], W.T of the input
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ALLOWED_BITS = (2, 3, 4, 8)
ZERO_FORMATS = ("v1", "v2")
_U32 = 0xFFFFFFFF


def _block(bits: int) -> tuple[int, int]:
    """(int32 words, values) of the smallest whole block: 3 words hold 32 3-bit values."""
    if bits not in ALLOWED_BITS:
        allowed = ", ".join(map(str, ALLOWED_BITS))
        raise ValueError(f"gptq: bits must be one of {allowed}, got {bits}")
    return (3, 32) if bits == 3 else (1, 32 // bits)


def _check_zero_format(zero_format: str) -> None:
    if zero_format not in ZERO_FORMATS:
        raise ValueError(f"gptq: zero_format must be one of {', '.join(ZERO_FORMATS)}, got {zero_format!r}")


def pack_rows(values: Tensor, bits: int) -> Tensor:
    """Pack integers in [0, 2**bits) of shape [R, C] along dim 0 into int32 [R*bits/32, C].

    Args:
        values: integer tensor, R a multiple of 32/bits (of 32 for 3 bits).
        bits: bits per value, one of 2, 3, 4, 8.

    Returns:
        The packed int32 words (two's complement of the unsigned bit pattern).
    """
    words, per = _block(bits)
    rows, cols = values.shape
    if rows % per:
        raise ValueError(f"gptq: cannot pack {rows} rows at {bits} bits; rows must be a multiple of {per}")
    v = values.to(torch.int64).reshape(rows // per, per, cols) & ((1 << bits) - 1)
    acc = torch.zeros(rows // per, words, cols, dtype=torch.int64, device=values.device)
    for j in range(per):
        word, offset = divmod(j * bits, 32)
        acc[:, word] |= (v[:, j] << offset) & _U32
        if offset + bits > 32:  # the value straddles into the next word (3 bits only)
            acc[:, word + 1] |= v[:, j] >> (32 - offset)
    acc = torch.where(acc >= 2**31, acc - 2**32, acc)
    return acc.reshape(rows // per * words, cols).to(torch.int32)


def unpack_rows(packed: Tensor, bits: int) -> Tensor:
    """Inverse of `pack_rows`: int32 [R*bits/32, C] -> int64 [R, C], values in [0, 2**bits).

    Uses only reshape, index_select, shifts and masks, so it traces with `make_fx`.
    """
    words, per = _block(bits)
    rows, cols = packed.shape
    positions = [j * bits for j in range(per)]
    device = packed.device
    lo_word = torch.tensor([p // 32 for p in positions], dtype=torch.int64, device=device)
    hi_word = torch.tensor([min(p // 32 + 1, words - 1) for p in positions], dtype=torch.int64, device=device)
    shift = torch.tensor([p % 32 for p in positions], dtype=torch.int64, device=device).reshape(1, per, 1)
    # int64 holds the unsigned word, so right shifts bring in zeros, not sign bits.
    u = (packed.to(torch.int64) & _U32).reshape(rows // words, words, cols)
    lo = torch.bitwise_right_shift(u.index_select(1, lo_word), shift)
    # A value that fits in its word gets shift >= bits here, so the mask removes hi.
    hi = torch.bitwise_left_shift(u.index_select(1, hi_word), 32 - shift)
    out = torch.bitwise_and(torch.bitwise_or(lo, hi), (1 << bits) - 1)
    return out.reshape(rows // words * per, cols)


def _zeros_int64(
    qzeros: Tensor | None, *, bits: int, zero_format: str, num_groups: int, n: int, device: torch.device
) -> Tensor:
    """Zero points [G, N] as int64; z = 2**(bits-1) when qzeros is absent (sym)."""
    _check_zero_format(zero_format)
    if qzeros is None:
        return torch.full((num_groups, n), 1 << (bits - 1), dtype=torch.int64, device=device)
    z = unpack_rows(qzeros.t(), bits).t()
    # v1 stores z - 1; like AutoGPTQ, add 1 back without masking.
    return z + 1 if zero_format == "v1" else z


def unpack(
    qweight: Tensor,
    qzeros: Tensor | None = None,
    *,
    bits: int,
    zero_format: str = "v1",
    num_groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """The integer weights and zero points of GPTQ tensors.

    Args:
        qweight: int32 [K*bits/32, N].
        qzeros: int32 [G, N*bits/32], or None for sym checkpoints (z = 2**(bits-1)).
        bits: 2, 3, 4 or 8.
        zero_format: "v1" (stores z - 1) or "v2" (stores z).
        num_groups: G, used only when qzeros is None.

    Returns:
        (q int32 [K, N], z int32 [G, N]).

    Example:
        >>> q, z = unpack(t["qweight"], t["qzeros"], bits=4)
    """
    q = unpack_rows(qweight, bits)
    z = _zeros_int64(
        qzeros, bits=bits, zero_format=zero_format, num_groups=num_groups, n=qweight.shape[1], device=q.device
    )
    return q.to(torch.int32), z.to(torch.int32)


def _groups(k: int, group_size: int, device: torch.device) -> Tensor:
    """k // group_size for every input row (one group when group_size is -1)."""
    rows = torch.arange(k, dtype=torch.int64, device=device)
    return rows // (k if group_size == -1 else group_size)


def _dequant_rows(q: Tensor, z: Tensor, scales: Tensor, groups: Tensor, clip: float | None) -> Tensor:
    """(q - z[g]) * s[g] in float32 for rows whose groups are `groups`, then the clip."""
    s = scales.to(torch.float32).index_select(0, groups)
    w = (q - z.index_select(0, groups)).to(torch.float32) * s
    return w if clip is None else torch.clamp(w, -clip, clip)


def dequantize(
    qweight: Tensor,
    scales: Tensor,
    qzeros: Tensor | None = None,
    g_idx: Tensor | None = None,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    zero_format: str = "v1",
    clip: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The dense weight W [K, N] = (q - z[g_idx[k]]) * scales[g_idx[k]], clamped to +-clip.

    Args:
        qweight: int32 [K*bits/32, N].
        scales: float [G, N].
        qzeros: int32 [G, N*bits/32]; may be None only when `sym` (z = 2**(bits-1)).
        g_idx: int32 [K]; None means k // group_size.
        bits: 2, 3, 4 or 8.
        group_size: rows per group, -1 for one group.
        sym: symmetric quantization.
        zero_format: "v1" or "v2".
        clip: clamp the dequantized weight to [-clip, clip].
        dtype: the result dtype (the math runs in float32).

    Returns:
        W [K, N], so that `x @ W` is the quantized linear layer.

    Example:
        >>> w = dequantize(qw, s, qz, g, bits=4, group_size=128, sym=False)
    """
    if qzeros is None and not sym:
        raise ValueError("gptq: qzeros may be absent only when sym=True")
    q = unpack_rows(qweight, bits)
    z = _zeros_int64(
        qzeros, bits=bits, zero_format=zero_format, num_groups=scales.shape[0], n=q.shape[1], device=q.device
    )
    groups = _groups(q.shape[0], group_size, q.device) if g_idx is None else g_idx.to(torch.int64)
    return _dequant_rows(q, z, scales, groups, clip).to(dtype)


def qmatmul_decomposed(
    x: Tensor,
    qweight: Tensor,
    scales: Tensor,
    qzeros: Tensor | None,
    g_idx: Tensor | None,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    zero_format: str = "v1",
    clip: float | None = None,
    method: Literal["g_idx", "argsort"] = "g_idx",
) -> Tensor:
    """`x @ dequantize(...)` in x's dtype, with simple aten ops only.

    Args:
        x: [M, K] float.
        qweight, scales, qzeros, g_idx, bits, group_size, sym, zero_format, clip: as in
            `dequantize`.
        method: how act-order (g_idx) is executed. "g_idx" indexes scales and zeros
            through g_idx. "argsort" is MAX's way: it permutes the columns of x and the
            rows of q by `argsort(g_idx)`, after which every group is the contiguous run of
            `group_size` rows that GPTQ's act-order produces; the two give equal results.

    Returns:
        [M, N] in x's dtype.
    """
    if method == "g_idx" or g_idx is None:
        w = dequantize(
            qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym,
            zero_format=zero_format, clip=clip, dtype=x.dtype,
        )  # fmt: skip
        return torch.matmul(x, w)
    if method != "argsort":
        raise ValueError(f"gptq: method must be 'g_idx' or 'argsort', got {method!r}")
    if qzeros is None and not sym:
        raise ValueError("gptq: qzeros may be absent only when sym=True")
    perm = torch.argsort(g_idx.to(torch.int64), stable=True)
    q = unpack_rows(qweight, bits).index_select(0, perm)
    z = _zeros_int64(
        qzeros, bits=bits, zero_format=zero_format, num_groups=scales.shape[0], n=q.shape[1], device=q.device
    )
    w = _dequant_rows(q, z, scales, _groups(q.shape[0], group_size, q.device), clip)
    return torch.matmul(x.index_select(1, perm), w.to(x.dtype))


def act_order_g_idx(perm: Tensor, group_size: int) -> Tensor:
    """GPTQ act-order groups: rows are quantized in the order `perm`, so row perm[i] is
    in group i // group_size. Returns int32 g_idx [K]."""
    k = perm.numel()
    if sorted(perm.tolist()) != list(range(k)):
        raise ValueError(f"gptq: perm must be a permutation of 0..{k - 1}")
    g_idx = torch.empty(k, dtype=torch.int64, device=perm.device)
    g_idx[perm.to(torch.int64)] = _groups(k, group_size, perm.device)
    return g_idx.to(torch.int32)


def _round_up_to(scale: Tensor, dtype: torch.dtype) -> Tensor:
    """`scale` in `dtype`, rounded up, so that the quantization grid still spans the range."""
    stored = scale.to(dtype)
    low = stored.to(torch.float32) < scale
    return torch.where(low, torch.nextafter(stored, torch.full_like(stored, float("inf"))), stored)


def _rtn_params(
    w: Tensor,
    g_idx: Tensor,
    num_groups: int,
    *,
    bits: int,
    sym: bool,
    zero_format: str,
    scale_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Per-group scales [G, N] (scale_dtype) and zero points [G, N] (int64), as GPTQ's
    quantizer: the range always includes 0; sym centres it, z = 2**(bits-1)."""
    maxq = (1 << bits) - 1
    index = g_idx.to(torch.int64)[:, None].expand_as(w)
    zeros = torch.zeros(num_groups, w.shape[1], dtype=torch.float32, device=w.device)
    xmin = zeros.scatter_reduce(0, index, w, "amin")  # include_self: min(w, 0), as GPTQ
    xmax = zeros.scatter_reduce(0, index, w, "amax")
    if sym:
        xmax = torch.maximum(-xmin, xmax)
        xmin = -xmax
    elif zero_format == "v1":
        # v1 stores z - 1 and cannot hold z = 0: widen the range so that z >= 1.
        xmin = torch.minimum(xmin, -xmax / (maxq - 1))
    empty = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(empty, -1.0, xmin), torch.where(empty, 1.0, xmax)
    scales = _round_up_to((xmax - xmin) / maxq, scale_dtype)
    if sym:
        return scales, torch.full_like(xmin, 1 << (bits - 1), dtype=torch.int64)
    lowest = 1 if zero_format == "v1" else 0
    z = torch.clamp(torch.round(-xmin / scales.to(torch.float32)), lowest, maxq)
    return scales, z.to(torch.int64)


def pack(
    weight: Tensor,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    desc_act: bool = False,
    perm: Tensor | None = None,
    zero_format: str = "v1",
    scale_dtype: torch.dtype = torch.float16,
) -> dict[str, Tensor]:
    """Round-to-nearest quantization of a float weight into AutoGPTQ/GPTQModel tensors.

    Args:
        weight: [N, K] float, the HF Linear layout (out features x in features).
        bits: 2, 3, 4 or 8.
        group_size: input rows per group; -1 for one group. Must divide K.
        sym: symmetric quantization (z = 2**(bits-1)); qzeros is stored anyway.
        desc_act: act-order: rows are grouped in the order `perm` (g_idx[perm[i]] =
            i // group_size). Without desc_act, g_idx is k // group_size.
        perm: the act-order; defaults to descending input-column norm of `weight`, a
            stand-in for GPTQ's Hessian diagonal, which needs calibration data.
        zero_format: "v1" (AutoGPTQ, stores z - 1; groups that would need z = 0 get a
            slightly wider range) or "v2" (GPTQModel, stores z).
        scale_dtype: dtype of the stored scales. Scales are rounded up to it, so the
            error stays within scale/2 of the stored scale.

    Returns:
        {"qweight": int32 [K*bits/32, N], "scales": [G, N] scale_dtype,
         "qzeros": int32 [G, N*bits/32], "g_idx": int32 [K]}, in `dequantize`'s
        argument order.

    Example:
        >>> t = pack(torch.randn(64, 128), bits=4, group_size=32, sym=True, desc_act=True)
    """
    _check_zero_format(zero_format)
    w = weight.to(torch.float32).t().contiguous()
    k = w.shape[0]
    if group_size != -1 and (group_size <= 0 or k % group_size):
        raise ValueError(f"gptq: group_size ({group_size}) must be -1 or a positive divisor of K ({k})")
    if perm is not None and not desc_act:
        raise ValueError("gptq: perm is the act-order and needs desc_act=True")
    if desc_act:
        perm = perm if perm is not None else torch.argsort(w.pow(2).sum(1), descending=True, stable=True)
        g_idx = act_order_g_idx(perm, group_size)
    else:
        g_idx = _groups(k, group_size, w.device).to(torch.int32)
    num_groups = 1 if group_size == -1 else k // group_size
    scales, z = _rtn_params(
        w, g_idx, num_groups, bits=bits, sym=sym, zero_format=zero_format, scale_dtype=scale_dtype
    )
    rows = g_idx.to(torch.int64)
    q = torch.round(w / scales.to(torch.float32).index_select(0, rows)) + z.index_select(0, rows)
    q = torch.clamp(q, 0, (1 << bits) - 1).to(torch.int64)
    stored_z = z - 1 if zero_format == "v1" else z
    return {
        "qweight": pack_rows(q, bits),
        "scales": scales,
        "qzeros": pack_rows(stored_z.t(), bits).t().contiguous(),
        "g_idx": g_idx,
    }
