"""Triton GPTQ matmul: `x [M, K] @ W [K, N]`, W dequantized in registers from AutoGPTQ tensors.

Layout (AutoGPTQ/GPTQModel): qweight int32 `[K*bits/32, N]`, value i of a word at bits
[i·bits, (i+1)·bits), row r holds k = r·(32/bits) + i; qzeros int32 `[G, N*bits/32]`, packed
the same way along N (v1 stores z − 1, v2 stores z; absent means z = 2^(bits−1), sym);
scales `[G, N]`; W[k, n] = (q[k, n] − z[g, n])·scales[g, n] with g = g_idx[k] (act-order) or
k // group_size. Bits 2, 4 and 8 (the widths whose values never straddle a word).

Three in-register kernels and a prefill path (`pick_config` / `dequant_min_m` (gptq_plan.py)
choose; tuned on an H100, see docs/benchmarks.md):
- `_gptq_gemv_kernel` (M = 1): FMA GEMV with mantissa-bit unpacking (no int->float conversion);
- `_gptq_mma_kernel` (M = 2..16 and 33..): tensor-core tiles with per-tile scales after the dot;
- `_gptq_matmul_kernel` (the general one: act-order g_idx gathers, clip, group sizes the others
  cannot tile, and M = 17..32 where it measured fastest);
- M ≥ `dequant_min_m` (160): `_gptq_dequant_kernel` writes W once to a transient `[K, N]` in x's
  dtype, then `torch.matmul` (cuBLAS). This path alone materializes the dense weight (freed after
  the call): at M=512 one pass (23 µs, 2.7 TB/s) plus cuBLAS (37 µs) beat re-dequantizing every
  weight tile for each row tile (125 µs). Decode sizes never take it.
`_gptq_mma_kernel`'s SWAP_AB (W^T as the wgmma's register A operand) is correct but measured
slower at every M on an H100 (M=16 25 vs 17.6 µs); the sweep keeps it as a variant.
Small grids split K: each program writes its fp32 partial to a workspace `[split, M, N]` and
`_splitk_reduce_kernel` sums the slices in a fixed order (deterministic, two launches, no memset,
CUDA-graph safe). An atomic-ticket single-launch variant raced on an H100 (2026-11-27) and an
atomics-into-zeroed-buffer variant needed three launches; both are gone.
Act-order: `act_order_prepare` sorts the weight rows by argsort(g_idx) once (cached), and x's
columns are permuted per call, so act-order checkpoints run on the per-tile kernels.

The packed tile `[BLOCK_K/pack, BLOCK_N]` is loaded once and unpacked by a broadcast shift to
`[BLOCK_K/pack, pack, BLOCK_N]`, reshaped to `[BLOCK_K, BLOCK_N]` (row k = r·pack + i). When the
group is constant over a K tile (no act-order, group_size a multiple of BLOCK_K) the scale
is applied after the dot, per column: Σ_k x·(q − z)·s = s·Σ_k x·(q − z), which saves a
multiply per weight; (q − z) is exact in fp16 and bf16.
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.gptq_plan import act_order_prepare, dequant_min_m, pick_config

__all__ = ["act_order_prepare", "gptq_matmul_triton"]


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
        # Split-K: this slice's fp32 partial; `_splitk_reduce_kernel` sums the slices in order.
        tl.store(ws_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :], acc, mask=out_mask)


# ---- fast paths (per-tile scales: no act-order g_idx, no clip, group_size a multiple of BLOCK_K) ------------


@triton.jit
def _gptq_gemv_kernel(
    x_ptr, qw_ptr, scales_ptr, qz_ptr, out_ptr,
    N, K, group_size, k_per_split,
    stride_xm, stride_xk, stride_qw, stride_s, stride_qz, stride_om, stride_os,
    BITS: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_V1: tl.constexpr, X_VEC: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One row of x times W: FMA GEMV, program (n tile, k split, row m).

    Unpacking: value i of a word is moved into the top mantissa bits of an fp32 whose exponent
    is 0, giving v = 1 + q/2^BITS exactly (a shift and a mask-or: no conversion, no subtract).
    Over a group, Σ x·(q − z)·s = s·(2^BITS·Σ x·v − (2^BITS + z)·Σ x), so the inner loop is
    one FMA per weight, and the scale and zero are applied once per group and column.
    X_VEC=True loads the x slice contiguously (one vector load the pipeliner can prefetch) and
    multiplies it as `[R, PACK, 1]` with the weights unpacked to `[R, PACK, BLOCK_N]`;
    X_VEC=False loads x's column k0 + r·PACK + i for each value i (strided scalar loads).
    """
    PACK: tl.constexpr = 32 // BITS
    R: tl.constexpr = BLOCK_K // PACK
    MASK: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS)
    TWO_B: tl.constexpr = 1 << BITS
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_r = tl.arange(0, R)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    x_row = x_ptr + m * stride_xm
    for k0 in range(k_begin, k_end, BLOCK_K):
        words = tl.load(qw_ptr + (k0 // PACK + offs_r)[:, None] * stride_qw + offs_n[None, :],
                        mask=n_ok[None, :], other=0)  # fmt: skip
        if X_VEC:
            offs_i = tl.arange(0, PACK)
            x2 = tl.load(x_row + (k0 + offs_r[:, None] * PACK + offs_i[None, :]) * stride_xk).to(tl.float32)
            q = (words[:, None, :] >> (offs_i * BITS)[None, :, None]) & ((1 << BITS) - 1)
            v = ((q << (23 - BITS)) | 0x3F800000).to(tl.float32, bitcast=True)
            col = tl.sum(tl.sum(x2[:, :, None] * v, axis=1), axis=0)
            sx = tl.sum(tl.sum(x2, axis=1), axis=0)
        else:
            part = tl.zeros([R, BLOCK_N], dtype=tl.float32)
            sxr = tl.zeros([R], dtype=tl.float32)
            for i in tl.static_range(PACK):
                xi = tl.load(x_row + (k0 + offs_r * PACK + i) * stride_xk).to(tl.float32)
                if 23 - BITS - i * BITS >= 0:  # compile-time: move value i to mantissa bits [23-BITS, 23)
                    t = words << (23 - BITS - i * BITS)
                else:
                    t = words >> (i * BITS + BITS - 23)
                v = ((t & MASK) | 0x3F800000).to(tl.float32, bitcast=True)
                part += xi[:, None] * v
                sxr += xi
            col = tl.sum(part, axis=0)
            sx = tl.sum(sxr, axis=0)
        g = k0 // group_size
        s = tl.load(scales_ptr + g * stride_s + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        z = _zeros_row(qz_ptr, g, offs_n, n_ok, stride_qz, BITS, HAS_ZEROS, ZERO_V1).to(tl.float32)
        acc += s * (col * TWO_B - (TWO_B + z) * sx)
    tl.store(
        out_ptr + pid_k * stride_os + m * stride_om + offs_n, acc.to(out_ptr.dtype.element_ty), mask=n_ok
    )


@triton.jit
def _gptq_mma_kernel(
    x_ptr, qw_ptr, scales_ptr, qz_ptr, out_ptr,
    M, N, K, group_size, k_per_split,
    stride_xm, stride_xk, stride_qw, stride_s, stride_qz, stride_om, stride_os,
    BITS: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_V1: tl.constexpr,
    NIBBLE_DOTS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_FP32: tl.constexpr, GROUP_M: tl.constexpr, SWAP_AB: tl.constexpr,
):  # fmt: skip
    """Tensor-core tile `[BLOCK_M, BLOCK_N]` over one K slice, per-tile scales applied after the dot.

    The weight tile is dequantized to (q − z) in x's dtype in registers (exact: |q − z| < 2^8),
    via 2^23 + q formed from the fp32 mantissa bits. NIBBLE_DOTS=True keeps the packed order:
    value i of the R word rows is the K=R slice {k0 + r·PACK + i}, multiplied by the matching
    (strided) columns of x, PACK dots per tile and no reshape. NIBBLE_DOTS=False unpacks to
    `[R, PACK, BLOCK_N]` and reshapes to `[BLOCK_K, BLOCK_N]` (one dot).
    """
    PACK: tl.constexpr = 32 // BITS
    R: tl.constexpr = BLOCK_K // PACK
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    # Grouped ordering of (m, n) tiles so that neighbouring programs share weight tiles in L2.
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    offs_r = tl.arange(0, R)
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    if SWAP_AB:
        acc_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        shifts_t = tl.arange(0, PACK) * BITS
        for k0 in range(k_begin, k_end, BLOCK_K):
            words_t = tl.load(qw_ptr + (k0 // PACK + offs_r)[None, :] * stride_qw + offs_n[:, None],
                              mask=n_ok[:, None], other=0)  # fmt: skip
            g = k0 // group_size
            z = (
                _zeros_row(qz_ptr, g, offs_n, n_ok, stride_qz, BITS, HAS_ZEROS, ZERO_V1).to(tl.float32)
                + 8388608.0
            )
            s = tl.load(scales_ptr + g * stride_s + offs_n, mask=n_ok, other=0.0).to(tl.float32)
            kk = k0 + tl.arange(0, BLOCK_K)
            xt = tl.load(x_ptr + kk[:, None] * stride_xk + offs_m[None, :] * stride_xm,
                         mask=m_ok[None, :], other=0.0)  # fmt: skip
            bits_t = ((words_t[:, :, None] >> shifts_t[None, None, :]) & ((1 << BITS) - 1)) | 0x4B000000
            qt = tl.reshape(bits_t.to(tl.float32, bitcast=True), [BLOCK_N, BLOCK_K])
            if DOT_FP32:
                part_t = tl.dot(qt - z[:, None], xt.to(tl.float32), input_precision="ieee")
            else:
                part_t = tl.dot((qt - z[:, None]).to(xt.dtype), xt)
            acc_t += part_t * s[:, None]
        tl.store(out_ptr + pid_k * stride_os + offs_m[None, :] * stride_om + offs_n[:, None],
                 acc_t.to(out_ptr.dtype.element_ty), mask=m_ok[None, :] & n_ok[:, None])  # fmt: skip
        return
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        words = tl.load(qw_ptr + (k0 // PACK + offs_r)[:, None] * stride_qw + offs_n[None, :],
                        mask=n_ok[None, :], other=0)  # fmt: skip
        g = k0 // group_size
        z = (
            _zeros_row(qz_ptr, g, offs_n, n_ok, stride_qz, BITS, HAS_ZEROS, ZERO_V1).to(tl.float32)
            + 8388608.0
        )
        s = tl.load(scales_ptr + g * stride_s + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if NIBBLE_DOTS:
            part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for i in tl.static_range(PACK):
                kk = k0 + offs_r * PACK + i
                xi = tl.load(x_ptr + offs_m[:, None] * stride_xm + kk[None, :] * stride_xk,
                             mask=m_ok[:, None], other=0.0)  # fmt: skip
                q = (((words >> (i * BITS)) & ((1 << BITS) - 1)) | 0x4B000000).to(tl.float32, bitcast=True)
                if DOT_FP32:
                    part += tl.dot(xi.to(tl.float32), q - z[None, :], input_precision="ieee")
                else:
                    part += tl.dot(xi, (q - z[None, :]).to(xi.dtype))
        else:
            kk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + kk[None, :] * stride_xk,
                        mask=m_ok[:, None], other=0.0)  # fmt: skip
            shifts = tl.arange(0, PACK) * BITS
            bits_f = ((words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)) | 0x4B000000
            q = tl.reshape(bits_f.to(tl.float32, bitcast=True), [BLOCK_K, BLOCK_N])
            if DOT_FP32:
                part = tl.dot(x.to(tl.float32), q - z[None, :], input_precision="ieee")
            else:
                part = tl.dot(x, (q - z[None, :]).to(x.dtype))
        acc += part * s[None, :]
    tl.store(out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])  # fmt: skip


@triton.jit
def _gptq_dequant_kernel(
    qw_ptr, scales_ptr, qz_ptr, gidx_ptr, w_ptr,
    N, K, group_size, clip,
    stride_qw, stride_s, stride_qz, stride_w,
    BITS: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_V1: tl.constexpr, HAS_GIDX: tl.constexpr,
    GROUP_PER_TILE: tl.constexpr, HAS_CLIP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """W[k0:k0+BLOCK_K, n tile] = (q − z)·s (clamped with clip) in w's dtype: the prefill path's
    one dequantization pass (then a dense matmul). Value i of the R word rows is row
    k0 + r·PACK + i: PACK strided stores of `[R, BLOCK_N]`, each row contiguous along N."""
    PACK: tl.constexpr = 32 // BITS
    R: tl.constexpr = BLOCK_K // PACK
    MASK: tl.constexpr = (1 << BITS) - 1
    k0 = tl.program_id(0) * BLOCK_K
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_r = tl.arange(0, R)
    r_ok = k0 // PACK + offs_r < K // PACK
    ok = r_ok[:, None] & n_ok[None, :]
    words = tl.load(qw_ptr + (k0 // PACK + offs_r)[:, None] * stride_qw + offs_n[None, :], mask=ok, other=0)
    if GROUP_PER_TILE:
        g0 = k0 // group_size
        z_row = _zeros_row(qz_ptr, g0, offs_n, n_ok, stride_qz, BITS, HAS_ZEROS, ZERO_V1).to(tl.float32)
        s_row = tl.load(scales_ptr + g0 * stride_s + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    for i in tl.static_range(PACK):
        kk = k0 + offs_r * PACK + i
        q = (((words >> (i * BITS)) & MASK) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
        if GROUP_PER_TILE:
            w = (q - z_row[None, :]) * s_row[None, :]
        else:
            if HAS_GIDX:
                g = tl.load(gidx_ptr + kk, mask=r_ok, other=0)
            else:
                g = kk // group_size
            z = _zeros_row(qz_ptr, g[:, None], offs_n[None, :], ok, stride_qz, BITS, HAS_ZEROS, ZERO_V1)
            s = tl.load(scales_ptr + g[:, None] * stride_s + offs_n[None, :], mask=ok, other=0.0)
            w = (q - z.to(tl.float32)) * s.to(tl.float32)
        if HAS_CLIP:
            w = tl.clamp(w, -clip, clip)
        tl.store(w_ptr + kk[:, None] * stride_w + offs_n[None, :], w.to(w_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _splitk_reduce_kernel(ws_ptr, out_ptr, numel, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """out = Σ_s ws[s] in a fixed order (deterministic), cast to out's dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(ws_ptr + s * numel + offs, mask=ok, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


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
    act_order: str = "permute",
    config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """`x @ W` for GPTQ tensors, dequantizing W in registers (W is never written to memory), except
    from M = `dequant_min_m` on (prefill), where W is dequantized once to a transient dense copy.

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
        act_order: with an act-order g_idx, "permute" sorts the weight rows by group once
            (cached, see `act_order_prepare`) and permutes x's columns (index_select), so the
            per-tile kernels run; "gather" indexes scales and zeros through g_idx per row.
        config: override kernel ("gemv" | "mma" | "general" | "dequant"), block_m/block_n/block_k,
            split_k, num_warps, num_stages, nibble_dots, swap_ab, reduce_block, dq_block_k/dq_block_n/
            dq_num_warps (benchmarks and tests).

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
    if act_order not in ("permute", "gather"):
        raise ValueError(f"gptq_matmul_triton: act_order must be 'permute' or 'gather', got {act_order!r}")
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
    perm = None
    if g_idx is not None and act_order == "permute" and clip is None:
        prepared = act_order_prepare(qweight, g_idx, bits, group_size)
        if prepared is not None:
            qweight, perm = prepared
            g_idx = None
    forced = (config or {}).get("kernel")
    if forced == "dequant" or (forced is None and m >= dequant_min_m(x.device)):
        if perm is not None:  # the sorted rows dequantize with per-tile groups (gathering is slower)
            x = x.index_select(1, perm)
        return _dequant_matmul(x, qweight, scales, qzeros, g_idx, bits, group_size, zero_format, clip, config)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    fast = g_idx is None and clip is None
    cfg = pick_config(m, n, k, group_size, bits, fast, x.device)
    if config and config.get("kernel", cfg["kernel"]) != cfg["kernel"]:
        if config["kernel"] != "general" and not fast:
            raise ValueError(
                f"gptq_matmul_triton: kernel {config['kernel']!r} needs per-tile scales (no g_idx, no clip)"
            )
        cfg = pick_config(m, n, k, group_size, bits, fast, x.device, kernel=config["kernel"])
    cfg |= config or {}
    kernel = cfg["kernel"]
    if perm is not None:  # x[:, perm] @ W_sorted == x @ W
        x = x.index_select(1, perm)
    block_k = cfg["block_k"]
    if kernel != "general" and (group_size % block_k or k % block_k):
        raise ValueError(f"gptq_matmul_triton: block_k {block_k} must divide group_size {group_size} and K")
    k_per_split = triton.cdiv(triton.cdiv(k, cfg["split_k"]), block_k) * block_k
    split_k = triton.cdiv(k, k_per_split)
    on_gpu = x.device.type == "cuda"
    dest = out if split_k == 1 else torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
    zeros_arg = qweight if qzeros is None else qzeros
    qz_stride = 0 if qzeros is None else qzeros.stride(0)
    common = {"BITS": bits, "HAS_ZEROS": qzeros is not None, "ZERO_V1": zero_format == "v1",
              "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}  # fmt: skip
    if kernel == "gemv":
        grid: tuple[int, ...] = (triton.cdiv(n, cfg["block_n"]), split_k, m)
        _gptq_gemv_kernel[grid](
            x, qweight, scales, zeros_arg, dest,
            n, k, group_size, k_per_split,
            x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0), qz_stride, n, m * n,
            X_VEC=bool(cfg.get("x_vec", 1)), BLOCK_N=cfg["block_n"], BLOCK_K=block_k, **common,
        )  # fmt: skip
    elif kernel == "mma":
        grid = (triton.cdiv(m, cfg["block_m"]) * triton.cdiv(n, cfg["block_n"]), split_k)
        _gptq_mma_kernel[grid](
            x, qweight, scales, zeros_arg, dest,
            m, n, k, group_size, k_per_split,
            x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0), qz_stride, n, m * n,
            NIBBLE_DOTS=bool(cfg.get("nibble_dots", 0)),
            BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=block_k,
            # Triton 3.9's interpreter gets bf16 dots wrong, so on the CPU the dots run in fp32.
            DOT_FP32=not on_gpu or x.dtype == torch.float32, GROUP_M=cfg.get("group_m", 8),
            SWAP_AB=bool(cfg.get("swap_ab", 0)), **common,
        )  # fmt: skip
    else:
        grid = (triton.cdiv(n, cfg["block_n"]), triton.cdiv(m, cfg["block_m"]), split_k)
        _gptq_matmul_kernel[grid](
            x, qweight, scales, zeros_arg,
            qweight if g_idx is None else g_idx.contiguous(),
            out, dest,
            m, n, k, group_size, k_per_split, 0.0 if clip is None else float(clip),
            x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0), qz_stride, out.stride(0),
            HAS_GIDX=g_idx is not None,
            GROUP_PER_TILE=g_idx is None and group_size % block_k == 0 and k_per_split % block_k == 0,
            HAS_CLIP=clip is not None, SPLIT_K=split_k,
            BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=block_k,
            DOT_PRECISION="ieee" if x.dtype == torch.float32 or not on_gpu else "tf32",
            DOT_FP32=not on_gpu, **common,
        )  # fmt: skip
    if split_k > 1:
        block = cfg.get("reduce_block", 256)
        _splitk_reduce_kernel[(triton.cdiv(m * n, block),)](dest, out, m * n, SPLIT_K=split_k, BLOCK=block)
    return out


def _dequant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int,
    zero_format: str,
    clip: float | None,
    config: dict[str, Any] | None,
) -> torch.Tensor:
    """The prefill path (M ≥ `dequant_min_m`): one Triton pass writes W in x's dtype to a transient
    `[K, N]` workspace (`dequantize_weight`), then `torch.matmul` (cuBLAS). Unlike the other paths
    this materializes the dense weight (2 bytes a weight, freed after the call): at large M the
    matmul is compute-bound and the per-tile dequantization of the in-register kernels, repeated
    for every row tile, costs more than one pass over W (docs/benchmarks.md). Act-order runs on the sorted rows
    (x permuted) like the other paths; the "gather" mode and clip are applied in the pass itself."""
    w = dequantize_weight(qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size,
                          zero_format=zero_format, clip=clip, dtype=x.dtype, config=config)  # fmt: skip
    return torch.matmul(x, w)


def dequantize_weight(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None,
    g_idx: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
    clip: float | None,
    dtype: torch.dtype,
    config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """W `[K, N]` in `dtype` from GPTQ tensors (one Triton pass; group_size already resolved from -1)."""
    cfg = config or {}
    pack = 32 // bits
    k, n = qweight.shape[0] * pack, qweight.shape[1]
    block_k = cfg.get("dq_block_k", max(64, 2 * pack))
    block_n = cfg.get("dq_block_n", 256 if n >= 256 else max(16, triton.next_power_of_2(n)))
    if block_k % pack:
        raise ValueError(f"gptq_matmul_triton: dq_block_k {block_k} must be a multiple of {pack}")
    w = torch.empty((k, n), dtype=dtype, device=qweight.device)
    grid = (triton.cdiv(k, block_k), triton.cdiv(n, block_n))
    _gptq_dequant_kernel[grid](
        qweight, scales, qweight if qzeros is None else qzeros,
        qweight if g_idx is None else g_idx.contiguous(), w,
        n, k, group_size, 0.0 if clip is None else float(clip),
        qweight.stride(0), scales.stride(0), 0 if qzeros is None else qzeros.stride(0), w.stride(0),
        BITS=bits, HAS_ZEROS=qzeros is not None, ZERO_V1=zero_format == "v1", HAS_GIDX=g_idx is not None,
        GROUP_PER_TILE=g_idx is None and group_size % block_k == 0, HAS_CLIP=clip is not None,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=cfg.get("dq_num_warps", 4), num_stages=1,
    )  # fmt: skip
    return w
