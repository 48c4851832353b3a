"""Triton kernels of the GPTQ matmul on the repacked layout, tensor-core side (device code only):
the tiles of the "mma" path and the prefill path's dequantization pass.

`gptq_tiled_kernels.py` holds the layout description, the shared helpers and the GEMV;
`gptq_tiled.py` launches the kernels. The dequantized values `q − z` come from the lop3/prmt
PTX of `gptq_asm.py` (USE_ASM) or from shifts and masks (the interpreter, fp32 x, bf16 at 8 bits).
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import triton
import triton.language as tl

from fusegraph.runtime.kernels.gptq_tiled_kernels import (
    DQ4_BF16,
    DQ4_F16,
    DQ8_F16,
    KB,
    NB,
    _magic_zero,
    _pdl_enter,
    _pdl_leave,
    _prefetch_l2,
    _slot_rows,
    _splitk_store,
    _x_slices,
    _zero_f32,
)


@triton.jit
def _x_split(x_rows, k0, BLOCK_M: tl.constexpr, R: tl.constexpr, P: tl.constexpr):
    """`_x_slices` for `[BLOCK_M, ·]` rows without act-order: slot pair j's columns k0 + 2jR + [0, 2R)
    in one contiguous load, split in registers into slots j (even columns) and j + P/2 (odd)."""
    H: tl.constexpr = P // 2
    lo = ()
    hi = ()
    for j in tl.static_range(H):
        pair = tl.load(x_rows + (tl.arange(0, 2 * R) + (k0 + 2 * R * j))[None, :])
        a, b = tl.split(tl.reshape(pair, [BLOCK_M, R, 2]))
        lo = lo + (a,)  # type: ignore[assignment]
        hi = hi + (b,)  # type: ignore[assignment]
    return lo + hi


@triton.jit
def _dq_emulated(w, z, CB: tl.constexpr, DT: tl.constexpr):
    """The P tensors q_i − z `[R, BN]` in DT for words `[R, BN]` and zeros `[BN]` (fp32), by shifts."""
    P: tl.constexpr = 32 // CB
    out = ()
    for i in tl.static_range(P):
        q = ((w >> (i * CB)) & ((1 << CB) - 1)).to(tl.float32)
        out = out + ((q - z[None, :]).to(DT),)  # type: ignore[assignment]
    return out


@triton.jit
def _dq_asm(w, z, CB: tl.constexpr, BF16: tl.constexpr):
    """As `_dq_emulated`, in fp16/bf16 through lop3/prmt and one packed subtract per two values."""
    mz = _magic_zero(z, BF16)[None, :]
    if CB == 4:
        if BF16:
            out = tl.inline_asm_elementwise(
                DQ4_BF16,
                "=h,=h,=h,=h,=h,=h,=h,=h,r,r",
                [w, mz],
                dtype=(tl.bfloat16,) * 8,
                is_pure=True,
                pack=1,
            )
        else:
            out = tl.inline_asm_elementwise(
                DQ4_F16, "=h,=h,=h,=h,=h,=h,=h,=h,r,r", [w, mz], dtype=(tl.float16,) * 8, is_pure=True, pack=1
            )
    else:
        out = tl.inline_asm_elementwise(
            DQ8_F16, "=h,=h,=h,=h,r,r", [w, mz], dtype=(tl.float16,) * 4, is_pure=True, pack=1
        )
    return out


@triton.jit
def _grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program `pid` with the (m, n) tiles in groups of GROUP_M rows of tiles, so
    that neighbouring programs share weight tiles in L2."""
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % size_m, (pid % per_group) // size_m


@triton.jit
def _tiled_mma_kernel(
    x_ptr, qw_ptr, s_ptr, qz_ptr, perm_ptr, out_ptr, ws_ptr, cnt_ptr,
    M, N, K, group_size, k_per_split, stride_xm, stride_s, stride_qz, stride_om,
    CB: tl.constexpr, ZERO_V1: tl.constexpr, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr,
    BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
    TICKET: tl.constexpr, DOT_FP32: tl.constexpr, GROUP_M: tl.constexpr, SCALE_W: tl.constexpr,
    U: tl.constexpr, PF_LINES: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Tensor-core tile `[BLOCK_M, BLOCK_N]` over one K slice: per 128-row block, P dots
    `x[:, slot i rows] @ (q_i − z)` (each K = R), then the block's scale on the fp32 sum.
    PF_LINES and PDL as in the GEMV (`_tiled_gemv_kernel`)."""
    P: tl.constexpr = 32 // CB
    R: tl.constexpr = KB // P
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m, pid_n = _grouped_tile(pid, tl.cdiv(M, BLOCK_M), N // BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    offs_r = tl.arange(0, R)
    # word (strip n // 64, row, column n % 64)
    w_cols = (offs_n // NB).to(tl.int64) * (K // P) * NB + offs_n % NB
    x_rows = x_ptr + tl.where(m_ok, offs_m, 0)[:, None] * stride_xm
    dt = x_ptr.dtype.element_ty
    k_begin = pid_k * k_per_split
    if PF_LINES > 0:
        for st in tl.static_range(BLOCK_N // NB):
            strip = qw_ptr + (pid_n * (BLOCK_N // NB) + st).to(tl.int64) * (K // P) * NB
            _prefetch_l2(strip + (k_begin // P) * NB, (k_per_split // P) * NB, PF_LINES)
    _pdl_enter(PDL)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k00 in range(k_begin, k_begin + k_per_split, U * KB):
        ws = ()
        for u in tl.static_range(U):  # all U blocks' words in flight before the math
            ws = ws + (tl.load(qw_ptr + w_cols[None, :] + (offs_r + (k00 + u * KB) // P)[:, None] * NB),)  # type: ignore[assignment]
        for u in tl.static_range(U):
            k0 = k00 + u * KB
            g = k0 // group_size
            z = _zero_f32(qz_ptr, g, offs_n, stride_qz, CB, ZERO_V1)
            s = tl.load(s_ptr + g * stride_s + offs_n).to(tl.float32)
            if HAS_PERM:
                xs = _x_slices(x_rows, perm_ptr, k0, offs_r[None, :], R, P, HAS_PERM)
            else:
                xs = _x_split(x_rows, k0, BLOCK_M, R, P)
            if USE_ASM:
                wq = _dq_asm(ws[u], z, CB, BF16)
            elif DOT_FP32:
                wq = _dq_emulated(ws[u], z, CB, tl.float32)
            else:
                wq = _dq_emulated(ws[u], z, CB, dt)
            if SCALE_W:  # the scale on the weights (one rounding each, Marlin's way): no second accumulator
                for i in tl.static_range(P):
                    if DOT_FP32:
                        acc += tl.dot(xs[i].to(tl.float32), wq[i] * s[None, :], input_precision="ieee")
                    else:
                        acc += tl.dot(xs[i], wq[i] * s[None, :].to(dt))
            else:
                part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                for i in tl.static_range(P):
                    if DOT_FP32:
                        part += tl.dot(xs[i].to(tl.float32), wq[i], input_precision="ieee")
                    else:
                        part += tl.dot(xs[i], wq[i])
                acc += part * s[None, :]
    _pdl_leave(PDL)
    mask = m_ok[:, None] & (offs_n < N)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    _splitk_store(acc, out_ptrs, mask, ws_ptr, offs_m[:, None] * N + offs_n[None, :],
                  cnt_ptr + pid, pid_k, M * N, SPLIT_K, TICKET)  # fmt: skip


@triton.jit
def _natural_tile(w, z, s, CB: tl.constexpr, USE_ASM: tl.constexpr, BF16: tl.constexpr, DT: tl.constexpr):
    """The block's weights `(q − z)·s` `[128, BN]` in DT, rows in checkpoint order, from its words
    `[R, BN]`: the P slot tensors interleaved back by joins (slot i = e·P/2 + j holds row
    2(j·R + r) + e), so one dot of K = 128 takes the whole block."""
    if USE_ASM:
        wq = _dq_asm(w, z, CB, BF16)
    else:
        wq = _dq_emulated(w, z, CB, DT)
    if CB == 4:  # dims (r, n, e, j_lo, j_hi) -> (j_hi, j_lo, r, e, n)
        t = tl.join(tl.join(tl.join(wq[0], wq[4]), tl.join(wq[1], wq[5])),
                    tl.join(tl.join(wq[2], wq[6]), tl.join(wq[3], wq[7])))  # fmt: skip
        t = tl.permute(t, (4, 3, 0, 2, 1))
    else:  # dims (r, n, e, j) -> (j, r, e, n)
        t = tl.permute(tl.join(tl.join(wq[0], wq[2]), tl.join(wq[1], wq[3])), (3, 0, 2, 1))
    return tl.reshape(t, [KB, w.shape[1]]) * s[None, :].to(DT)


@triton.jit
def _tiled_nat_kernel(
    x_ptr, qw_ptr, s_ptr, qz_ptr, out_ptr, ws_ptr, cnt_ptr,
    M, N, K, group_size, k_per_split, stride_xm, stride_s, stride_qz, stride_om,
    CB: tl.constexpr, ZERO_V1: tl.constexpr, USE_ASM: tl.constexpr, BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr, TICKET: tl.constexpr,
    DOT_FP32: tl.constexpr, GROUP_M: tl.constexpr, PF_LINES: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Tensor-core tile `[BLOCK_M, BLOCK_N]` over one K slice, one dot of K = 128 per block: the
    block's weights are dequantized, scaled (one fp16/bf16 rounding, Marlin's way) and put back in
    row order in registers (`_natural_tile`), so x streams in its own order (act-order: the
    launcher permutes x once). PF_LINES and PDL as in the GEMV."""
    P: tl.constexpr = 32 // CB
    R: tl.constexpr = KB // P
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m, pid_n = _grouped_tile(pid, tl.cdiv(M, BLOCK_M), N // BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    offs_r = tl.arange(0, R)
    w_cols = (offs_n // NB).to(tl.int64) * (K // P) * NB + offs_n % NB
    x_ptrs = x_ptr + tl.where(m_ok, offs_m, 0)[:, None] * stride_xm + tl.arange(0, KB)[None, :]
    k_begin = pid_k * k_per_split
    if PF_LINES > 0:
        for st in tl.static_range(BLOCK_N // NB):
            strip = qw_ptr + (pid_n * (BLOCK_N // NB) + st).to(tl.int64) * (K // P) * NB
            _prefetch_l2(strip + (k_begin // P) * NB, (k_per_split // P) * NB, PF_LINES)
    _pdl_enter(PDL)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_begin, k_begin + k_per_split, KB):
        w = tl.load(qw_ptr + w_cols[None, :] + (offs_r + k0 // P)[:, None] * NB)
        g = k0 // group_size
        z = _zero_f32(qz_ptr, g, offs_n, stride_qz, CB, ZERO_V1)
        s = tl.load(s_ptr + g * stride_s + offs_n)
        xt = tl.load(x_ptrs + k0)
        if DOT_FP32:
            acc = tl.dot(xt.to(tl.float32), _natural_tile(w, z, s, CB, USE_ASM, BF16, tl.float32), acc,
                         input_precision="ieee")  # fmt: skip
        else:
            acc = tl.dot(xt, _natural_tile(w, z, s, CB, USE_ASM, BF16, x_ptr.dtype.element_ty), acc)
    _pdl_leave(PDL)
    mask = m_ok[:, None] & (offs_n < N)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    _splitk_store(acc, out_ptrs, mask, ws_ptr, offs_m[:, None] * N + offs_n[None, :],
                  cnt_ptr + pid, pid_k, M * N, SPLIT_K, TICKET)  # fmt: skip


@triton.jit
def _tiled_dequant_kernel(
    qw_ptr, s_ptr, qz_ptr, perm_ptr, w_ptr, N, K, group_size, stride_s, stride_qz, stride_w,
    CB: tl.constexpr, ZERO_V1: tl.constexpr, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr,
    BF16: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """W `[K, N]` in w's dtype, one 128-row block × BLOCK_N columns a program: the prefill path's
    single dequantization pass. With act-order, sorted row k is written to row perm[k], so W is in
    the checkpoint's row order and x needs no permutation."""
    P: tl.constexpr = 32 // CB
    R: tl.constexpr = KB // P
    k0 = tl.program_id(0) * KB
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R)
    w_cols = (offs_n // NB).to(tl.int64) * (K // P) * NB + offs_n % NB
    w = tl.load(qw_ptr + w_cols[None, :] + (k0 // P + offs_r)[:, None] * NB)
    g = k0 // group_size
    z = _zero_f32(qz_ptr, g, offs_n, stride_qz, CB, ZERO_V1)
    s = tl.load(s_ptr + g * stride_s + offs_n)
    dt = w_ptr.dtype.element_ty
    if USE_ASM:
        wq = _dq_asm(w, z, CB, BF16)
    else:
        wq = _dq_emulated(w, z, CB, dt)
    for i in tl.static_range(P):
        rows = _slot_rows(k0, offs_r, i, R, P)
        if HAS_PERM:
            rows = tl.load(perm_ptr + rows)
        val = (wq[i].to(tl.float32) * s.to(tl.float32)[None, :]).to(dt)
        tl.store(w_ptr + rows.to(tl.int64)[:, None] * stride_w + offs_n[None, :], val)
