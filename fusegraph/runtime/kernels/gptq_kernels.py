"""The Triton kernels of the GPTQ matmul (device code only; `gptq_matmul.py` launches them).

See `gptq_matmul.py` for the layout, which kernel serves which M, and why.
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import triton
import triton.language as tl


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
