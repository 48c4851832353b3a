"""Triton GPTQ matmul: `x [M, K] @ W [K, N]`, W dequantized in registers from AutoGPTQ tensors.

Layout (AutoGPTQ/GPTQModel): qweight int32 `[K*bits/32, N]`, value i of a word at bits
[i·bits, (i+1)·bits), row r holds k = r·(32/bits) + i; qzeros int32 `[G, N*bits/32]`, packed
the same way along N (v1 stores z − 1, v2 stores z; absent means z = 2^(bits−1), sym);
scales `[G, N]`; W[k, n] = (q[k, n] − z[g, n])·scales[g, n] with g = g_idx[k] (act-order) or
k // group_size. Bits 2, 4 and 8 (the widths whose values never straddle a word).

One kernel, two launch shapes:
- large M (prefill): tiles of BLOCK_M × BLOCK_N, the whole K per program (SPLIT_K = 1);
- small M (decode, and any M whose tiles cannot fill the GPU): split-K. Each program reduces
  one K slice of a tile and adds it into a zeroed fp32 buffer with atomic adds; the wrapper
  casts the buffer to x's dtype (three launches: memset, kernel, cast). A single-launch
  variant, where the last program of a tile (an atomic ticket) wrote the output and cleaned
  a cached workspace, gave a wrong result on 1 of 3 identical calls on an H100 (2026-11-27)
  and was dropped.

The packed tile `[BLOCK_K/pack, BLOCK_N]` is loaded once and unpacked by a broadcast shift to
`[BLOCK_K/pack, pack, BLOCK_N]`, reshaped to `[BLOCK_K, BLOCK_N]` (row k = r·pack + i). When the
group is constant over a K tile (no act-order, group_size a multiple of BLOCK_K) the scale
is applied after the dot, per column: Σ_k x·(q − z)·s = s·Σ_k x·(q − z), which saves a
multiply per weight; (q − z) is exact in fp16 and bf16.
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["gptq_matmul_triton"]


@triton.jit
def _zeros_row(
    qz_ptr, g, offs_n, n_ok, stride_qz_g, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_V1: tl.constexpr
):
    """z[g, offs_n] (g and offs_n broadcast together)."""
    PACK: tl.constexpr = 32 // BITS
    if HAS_ZEROS:
        word = tl.load(qz_ptr + g * stride_qz_g + offs_n // PACK, mask=n_ok, other=0)
        z = (word >> ((offs_n % PACK) * BITS)) & ((1 << BITS) - 1)
        if ZERO_V1:
            z = z + 1  # like AutoGPTQ: v1 stores z - 1, added back without masking
    else:
        z = tl.full(offs_n.shape, 1 << (BITS - 1), tl.int32)
    return z


@triton.jit
def _gptq_matmul_kernel(
    x_ptr, qw_ptr, scales_ptr, qz_ptr, gidx_ptr, out_ptr, ws_ptr,
    M, N, K, group_size, k_per_split, clip,
    stride_xm, stride_xk, stride_qw, stride_s, stride_qz, stride_om,
    BITS: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_V1: tl.constexpr, HAS_GIDX: tl.constexpr,
    GROUP_PER_TILE: tl.constexpr, HAS_CLIP: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
    DOT_FP32: tl.constexpr,
):  # fmt: skip
    PACK: tl.constexpr = 32 // BITS
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    shifts = tl.arange(0, PACK) * BITS
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
        if DOT_FP32:
            x = x.to(tl.float32)
        offs_r = k0 // PACK + tl.arange(0, BLOCK_K // PACK)
        words = tl.load(qw_ptr + offs_r[:, None] * stride_qw + offs_n[None, :],
                        mask=(offs_r < K // PACK)[:, None] & n_ok[None, :], other=0)  # fmt: skip
        # 2^23 + q as fp32 straight from the bits (OR into the mantissa of 2^23): no int->float
        # conversion, which runs at a quarter of the FMA rate. Subtracting 2^23 + z is exact.
        bits_f = ((words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)) | 0x4B000000
        q = tl.reshape(bits_f.to(tl.float32, bitcast=True), [BLOCK_K, BLOCK_N])
        if GROUP_PER_TILE:
            g = k0 // group_size
            z = (
                _zeros_row(qz_ptr, g, offs_n, n_ok, stride_qz, BITS, HAS_ZEROS, ZERO_V1).to(tl.float32)
                + 8388608.0
            )
            s = tl.load(scales_ptr + g * stride_s + offs_n, mask=n_ok, other=0.0).to(tl.float32)
            if HAS_CLIP:
                w = tl.clamp((q - z[None, :]) * s[None, :], -clip, clip)
                acc += tl.dot(x, w.to(x.dtype), input_precision=DOT_PRECISION)
            else:
                part = tl.dot(x, (q - z[None, :]).to(x.dtype), input_precision=DOT_PRECISION)
                acc += part * s[None, :]
        else:
            if HAS_GIDX:
                g = tl.load(gidx_ptr + offs_k, mask=k_ok, other=0)
            else:
                g = offs_k // group_size
            z = _zeros_row(qz_ptr, g[:, None], offs_n[None, :], n_ok[None, :], stride_qz, BITS, HAS_ZEROS,
                           ZERO_V1)  # fmt: skip
            s = tl.load(scales_ptr + g[:, None] * stride_s + offs_n[None, :], mask=n_ok[None, :], other=0.0)
            w = (q - (z.to(tl.float32) + 8388608.0)) * s.to(tl.float32)
            if HAS_CLIP:
                w = tl.clamp(w, -clip, clip)
            acc += tl.dot(x, w.to(x.dtype), input_precision=DOT_PRECISION)

    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    out_mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # Split-K: fp32 atomic adds into a zeroed buffer; the wrapper casts it to x's dtype.
        tl.atomic_add(ws_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=out_mask, sem="relaxed")


_SM_COUNT: dict[torch.device, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few splits exercise the split-K path
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[device]


def _pick_config(m: int, n: int, k: int, group_size: int, device: torch.device) -> dict[str, int]:
    """Block sizes and split-K for this shape (see the module docstring)."""
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    block_n = 128 if n >= 128 else max(16, triton.next_power_of_2(n))
    block_k = 128 if group_size % 128 == 0 or group_size >= k else 64 if group_size % 64 == 0 else 32
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    want = 2 * _sm_count(device)
    split = max(1, min(want // tiles, k // block_k)) if tiles < want else 1
    return {"block_m": block_m, "block_n": block_n, "block_k": block_k, "split_k": split,
            "num_warps": 4 if block_m <= 32 else 8, "num_stages": 3}  # fmt: skip


def gptq_matmul_triton(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None = None,
    g_idx: torch.Tensor | None = None,
    *,
    bits: int,
    group_size: int,
    sym: bool = False,
    zero_format: str = "v1",
    clip: float | None = None,
    desc_act: bool | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """`x @ W` for GPTQ tensors, dequantizing W in registers (W is never written to memory).

    Args:
        x: `[M, K]` fp16, bf16 or fp32.
        qweight, scales, qzeros, g_idx: AutoGPTQ tensors (see the module docstring).
        bits: 2, 4 or 8 (3-bit's cross-word packing is not handled here).
        group_size: rows per group, or -1 for one group.
        sym: symmetric quantization; only matters when qzeros is None (z = 2^(bits−1)).
        zero_format: "v1" (qzeros store z − 1) or "v2" (qzeros store z).
        clip: clamp the dequantized weight to [−clip, clip].
        desc_act: False means g_idx is the trivial k // group_size and may be ignored (the
            faster per-tile scales); None or True use g_idx when it is given.
        config: override block_m/block_n/block_k/split_k/num_warps/num_stages (benchmarks).

    Returns:
        `[M, N]` in x's dtype.

    Example:
        >>> y = gptq_matmul_triton(x, qw, scales, qz, bits=4, group_size=128)
    """
    if bits not in (2, 4, 8):
        raise ValueError(f"gptq_matmul_triton: bits must be 2, 4 or 8, got {bits}")
    if zero_format not in ("v1", "v2"):
        raise ValueError(f"gptq_matmul_triton: zero_format must be 'v1' or 'v2', got {zero_format!r}")
    if qzeros is None and not sym:
        raise ValueError("gptq_matmul_triton: qzeros may be absent only when sym=True")
    m, k = x.shape
    pack = 32 // bits
    n = qweight.shape[1]
    if qweight.shape[0] * pack != k:
        raise ValueError(f"gptq_matmul_triton: qweight rows {qweight.shape[0]} * {pack} != K = {k}")
    group_size = k if group_size == -1 else group_size
    if desc_act is False:
        g_idx = None
    qweight = qweight.contiguous()
    scales = scales.contiguous()
    qzeros = None if qzeros is None else qzeros.contiguous()
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    cfg = _pick_config(m, n, k, group_size, x.device) | (config or {})
    block_k = cfg["block_k"]
    k_per_split = triton.cdiv(triton.cdiv(k, cfg["split_k"]), block_k) * block_k
    split_k = triton.cdiv(k, k_per_split)
    grid = (triton.cdiv(n, cfg["block_n"]), triton.cdiv(m, cfg["block_m"]), split_k)
    acc32 = out if split_k == 1 else torch.zeros((m, n), dtype=torch.float32, device=x.device)
    _gptq_matmul_kernel[grid](
        x, qweight, scales,
        qweight if qzeros is None else qzeros,
        qweight if g_idx is None else g_idx.contiguous(),
        out, acc32,
        m, n, k, group_size, k_per_split, 0.0 if clip is None else float(clip),
        x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0),
        0 if qzeros is None else qzeros.stride(0), out.stride(0),
        BITS=bits, HAS_ZEROS=qzeros is not None, ZERO_V1=zero_format == "v1", HAS_GIDX=g_idx is not None,
        GROUP_PER_TILE=g_idx is None and group_size % block_k == 0 and k_per_split % block_k == 0,
        HAS_CLIP=clip is not None, SPLIT_K=split_k,
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=block_k,
        # Triton 3.9's interpreter gets bf16 dots wrong, so on the CPU the dots run in fp32.
        DOT_PRECISION="ieee" if x.dtype == torch.float32 or x.device.type != "cuda" else "tf32",
        DOT_FP32=x.device.type != "cuda",
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return out if split_k == 1 else acc32.to(x.dtype)
