"""Triton kernels of the GPTQ matmul on the repacked ("tiled") layout (device code only).

`gptq_tiled.py` launches them and documents the layout; `fusegraph/ops/gptq_layout.py` makes it.
In short: qweight_t int32 `[N/64, K/P, 64]` (P = 32/CB values a word, CB = 4 or 8 container
bits), one 64-column strip after another, each strip contiguous over K; in 128-row block b,
word row r holds in slot i = e·P/2 + j (bits [i·CB, (i+1)·CB)) the value of row
k = 128·b + 2(j·R + r) + e (R = 128/P): the slot pair (j, j + P/2) that one lop3/prmt unpacks
multiplies the adjacent x pair (k, k + 1), one 32-bit load of x.

Dequantization in registers (USE_ASM, fp16 and bf16 on the GPU): the lop3/prmt PTX of
`gptq_asm.py` gives `q − z` exactly in fp16/bf16 pairs; the GEMV multiplies them by packed x pairs
(fp16x2 partial sums of a word's products, then fp32), the tensor-core kernel hands them to
`tl.dot`. Without USE_ASM (the interpreter, fp32 x, bf16 x at 8 bits) shifts and masks give the
same values. |x| near fp16's range would overflow the GEMV's fp16x2 partials; the tiles do not.
"""

# ruff: noqa: N803, N806, SIM108 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import triton
import triton.language as tl

from fusegraph.runtime.kernels.gptq_asm import dot_asm, dq_asm

KB = tl.constexpr(128)  # rows of K per block (the interleave unit of the layout)
NB = tl.constexpr(64)  # columns per strip

DOT4_F16 = tl.constexpr(dot_asm(4, "f16"))
DOT4_BF16 = tl.constexpr(dot_asm(4, "bf16"))
DOT8_F16 = tl.constexpr(dot_asm(8, "f16"))
DQ4_F16 = tl.constexpr(dq_asm(4, "f16"))
DQ4_BF16 = tl.constexpr(dq_asm(4, "bf16"))
DQ8_F16 = tl.constexpr(dq_asm(8, "f16"))


@triton.jit
def _zero_f32(qz_ptr, g, offs_n, stride_qz, CB: tl.constexpr, ZERO_V1: tl.constexpr):
    """z[g, offs_n] as fp32 (g and offs_n broadcast together); qzeros packed along N at CB bits."""
    P: tl.constexpr = 32 // CB
    word = tl.load(qz_ptr + g * stride_qz + offs_n // P)
    z = (word >> ((offs_n % P) * CB)) & ((1 << CB) - 1)
    if ZERO_V1:
        z = z + 1  # like AutoGPTQ: v1 stores z - 1, added back without masking
    return z.to(tl.float32)


@triton.jit
def _half_bits(v, BF16: tl.constexpr):
    """The 16 bits of fp16/bf16 values as int32 in [0, 2^16)."""
    if BF16:
        h = v.to(tl.bfloat16)
    else:
        h = v.to(tl.float16)
    return h.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _magic_zero(z, BF16: tl.constexpr):
    """Packed pair (magic + z, magic + z) as int32: the subtrahend of the asm's packed subtract."""
    if BF16:
        h = _half_bits(z + 128.0, BF16)
    else:
        h = _half_bits(z + 1024.0, BF16)
    return h | (h << 16)


@triton.jit
def _slot_rows(k0, offs_r, i: tl.constexpr, R: tl.constexpr, P: tl.constexpr):
    """Rows of slot i in the block at k0: k0 + 2(j·R + r) + e for slot i = e·P/2 + j."""
    H: tl.constexpr = P // 2
    return offs_r * 2 + (k0 + 2 * R * (i % H) + i // H)


@triton.jit
def _x_slices(x_rows, perm_ptr, k0, offs_r, R: tl.constexpr, P: tl.constexpr, HAS_PERM: tl.constexpr):
    """The P slices x[rows of slot i] (offs_r any shape; x_rows broadcasts), through perm for act-order."""
    xs = ()
    for i in tl.static_range(P):
        k = _slot_rows(k0, offs_r, i, R, P)
        if HAS_PERM:
            k = tl.load(perm_ptr + k)
        xs = xs + (tl.load(x_rows + k),)  # type: ignore[assignment]
    return xs


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
def _splitk_store(acc, out_ptrs, mask, ws_ptr, ws_offs, cnt_ptr, pid_k, numel, SPLIT_K: tl.constexpr,
                  TICKET: tl.constexpr):  # fmt: skip
    """Store a tile: directly (SPLIT_K 1); as slice pid_k of the fp32 workspace; with TICKET, the last
    program of the tile (atomic ticket, acq_rel) sums the slices in order and writes the output."""
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptrs.dtype.element_ty), mask=mask)
    else:
        tl.store(ws_ptr + pid_k * numel + ws_offs, acc, mask=mask)
        if TICKET:
            tl.debug_barrier()  # every thread's slice is stored before the release below
            ticket = tl.atomic_add(cnt_ptr, 1, sem="acq_rel")
            if ticket == SPLIT_K - 1:
                total = tl.zeros_like(acc)
                for s in tl.static_range(SPLIT_K):  # L2 reads (.cg): L1 is not coherent
                    total += tl.load(ws_ptr + s * numel + ws_offs, mask=mask, other=0.0, cache_modifier=".cg")
                tl.store(out_ptrs, total.to(out_ptrs.dtype.element_ty), mask=mask)
                tl.atomic_xchg(cnt_ptr, 0, sem="relaxed")  # ready for the next launch


@triton.jit
def _unpair(v, HI: tl.constexpr, BF16: tl.constexpr):
    """The low or high fp16/bf16 half of packed int32 pairs, as fp32."""
    if HI:
        bits = (v >> 16) & 0xFFFF
    else:
        bits = v & 0xFFFF
    if BF16:
        out = bits.to(tl.int16).to(tl.bfloat16, bitcast=True).to(tl.float32)
    else:
        out = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return out


@triton.jit
def _gemv_load(strip, x_row, perm_ptr, s_ptr, qz_ptr, k0, group_size, offs_u, offs_r, offs_n, stride_s,
               stride_qz, CB: tl.constexpr, ZERO_V1: tl.constexpr, HAS_PERM: tl.constexpr, BF16: tl.constexpr):  # fmt: skip
    """The operands of U blocks from row k0: words `[U, R, 64]`; x as packed pairs `[U, R, 1]` (the x
    of slots j and j + P/2, j < P/2; at 8 bits the last two are unused); the packed magic zeros
    `[U, 1, 64]`; the scales `[U, 64]` (fp32)."""
    P: tl.constexpr = 32 // CB
    R: tl.constexpr = KB // P
    rows = offs_u[:, None, None] * R + offs_r[None, :, None]
    w = tl.load(strip + (k0 // P + rows) * NB + (offs_n % NB)[None, None, :])
    g = (k0 + offs_u * KB) // group_size
    z = _zero_f32(qz_ptr, g[:, None], offs_n[None, :], stride_qz, CB, ZERO_V1)
    s = tl.load(s_ptr + g[:, None] * stride_s + offs_n[None, :]).to(tl.float32)
    kb = k0 + offs_u[:, None] * KB  # [U, 1]
    if HAS_PERM:  # gather the pair's two columns through perm and pack them
        xs = _x_slices(x_row, perm_ptr, kb, offs_r[None, :], R, P, HAS_PERM)
        H: tl.constexpr = P // 2
        xp0 = _half_bits(xs[0], BF16) | (_half_bits(xs[H], BF16) << 16)
        xp1 = _half_bits(xs[1], BF16) | (_half_bits(xs[H + 1], BF16) << 16)
        if CB == 4:
            xp2 = _half_bits(xs[2], BF16) | (_half_bits(xs[6], BF16) << 16)
            xp3 = _half_bits(xs[3], BF16) | (_half_bits(xs[7], BF16) << 16)
        else:
            xp2 = xp0
            xp3 = xp1
    else:  # slot pair j multiplies the adjacent columns 2(jR + r) + {0, 1}: one 32-bit load
        x32 = x_row.to(tl.pointer_type(tl.int32)) + kb // 2 + offs_r[None, :]
        xp0 = tl.load(x32)
        xp1 = tl.load(x32 + R)
        if CB == 4:
            xp2 = tl.load(x32 + 2 * R)
            xp3 = tl.load(x32 + 3 * R)
        else:
            xp2 = xp0
            xp3 = xp1
    mz = _magic_zero(z, BF16)[:, None, :]
    return w, xp0[:, :, None], xp1[:, :, None], xp2[:, :, None], xp3[:, :, None], mz, s


@triton.jit
def _gemv_math(w, xp0, xp1, xp2, xp3, mz, s, CB: tl.constexpr, USE_ASM: tl.constexpr, BF16: tl.constexpr):
    """Σ over the U blocks and their rows of x·(q − z)·s: `[64]` fp32."""
    if USE_ASM:
        if CB == 4:
            part = tl.inline_asm_elementwise(
                DOT4_BF16 if BF16 else DOT4_F16, "=f,r,r,r,r,r,r", [w, xp0, xp1, xp2, xp3, mz],
                dtype=tl.float32, is_pure=True, pack=1,
            )  # fmt: skip
        else:
            part = tl.inline_asm_elementwise(
                DOT8_F16, "=f,r,r,r,r", [w, xp0, xp1, mz], dtype=tl.float32, is_pure=True, pack=1
            )
    else:  # the same sums from shifts and masks, in fp32
        z = _unpair(mz, False, BF16) - (128.0 if BF16 else 1024.0)
        if CB == 4:
            part = _unpair(xp0, False, BF16) * (((w >> 0) & 15).to(tl.float32) - z)
            part += _unpair(xp1, False, BF16) * (((w >> 4) & 15).to(tl.float32) - z)
            part += _unpair(xp2, False, BF16) * (((w >> 8) & 15).to(tl.float32) - z)
            part += _unpair(xp3, False, BF16) * (((w >> 12) & 15).to(tl.float32) - z)
            part += _unpair(xp0, True, BF16) * (((w >> 16) & 15).to(tl.float32) - z)
            part += _unpair(xp1, True, BF16) * (((w >> 20) & 15).to(tl.float32) - z)
            part += _unpair(xp2, True, BF16) * (((w >> 24) & 15).to(tl.float32) - z)
            part += _unpair(xp3, True, BF16) * (((w >> 28) & 15).to(tl.float32) - z)
        else:
            part = _unpair(xp0, False, BF16) * (((w >> 0) & 255).to(tl.float32) - z)
            part += _unpair(xp1, False, BF16) * (((w >> 8) & 255).to(tl.float32) - z)
            part += _unpair(xp0, True, BF16) * (((w >> 16) & 255).to(tl.float32) - z)
            part += _unpair(xp1, True, BF16) * (((w >> 24) & 255).to(tl.float32) - z)
    return tl.sum(tl.sum(part, axis=1) * s, axis=0)


@triton.jit
def _tiled_gemv_kernel(
    x_ptr, qw_ptr, s_ptr, qz_ptr, perm_ptr, out_ptr, ws_ptr, cnt_ptr,
    M, N, K, group_size, k_per_split, stride_xm, stride_s, stride_qz, stride_om,
    CB: tl.constexpr, ZERO_V1: tl.constexpr, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr,
    BF16: tl.constexpr, U: tl.constexpr, SPLIT_K: tl.constexpr, TICKET: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """One fp16/bf16 row of x times one 64-column strip over one K slice; program (strip, split, row).

    Each step takes U blocks of 128 rows (`[U, R, 64]` words); a block has one group (the layout
    needs group_size % 128 == 0), so its scale multiplies the block's column sums once. PREFETCH
    loads the next step's operands before the math of this one (registers double-buffered: the
    loads are in flight during the math).
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    P: tl.constexpr = 32 // CB
    STEP: tl.constexpr = U * KB
    offs_n = pid_n * NB + tl.arange(0, NB)
    offs_u = tl.arange(0, U)
    offs_r = tl.arange(0, KB // P)
    strip = qw_ptr + pid_n.to(tl.int64) * (K // P) * NB
    x_row = x_ptr + m * stride_xm
    acc = tl.zeros([NB], dtype=tl.float32)
    k_begin = pid_k * k_per_split
    k_last = k_begin + k_per_split - STEP
    if PREFETCH:
        w, xp0, xp1, xp2, xp3, mz, s = _gemv_load(strip, x_row, perm_ptr, s_ptr, qz_ptr, k_begin, group_size,
                                                  offs_u, offs_r, offs_n, stride_s, stride_qz, CB, ZERO_V1,
                                                  HAS_PERM, BF16)  # fmt: skip
    for k0 in range(k_begin, k_begin + k_per_split, STEP):
        if PREFETCH:
            kn = tl.minimum(k0 + STEP, k_last)  # the last step reloads its own blocks (not used)
            nw_, nx0, nx1, nx2, nx3, nmz, ns_ = _gemv_load(strip, x_row, perm_ptr, s_ptr, qz_ptr, kn, group_size,
                                                            offs_u, offs_r, offs_n, stride_s, stride_qz, CB,
                                                            ZERO_V1, HAS_PERM, BF16)  # fmt: skip
            acc += _gemv_math(w, xp0, xp1, xp2, xp3, mz, s, CB, USE_ASM, BF16)
            w, xp0, xp1, xp2, xp3, mz, s = nw_, nx0, nx1, nx2, nx3, nmz, ns_
        else:
            w, xp0, xp1, xp2, xp3, mz, s = _gemv_load(strip, x_row, perm_ptr, s_ptr, qz_ptr, k0, group_size, offs_u,
                                                      offs_r, offs_n, stride_s, stride_qz, CB, ZERO_V1, HAS_PERM,
                                                      BF16)  # fmt: skip
            acc += _gemv_math(w, xp0, xp1, xp2, xp3, mz, s, CB, USE_ASM, BF16)
    num_n = N // NB
    _splitk_store(acc, out_ptr + m * stride_om + offs_n, offs_n < N, ws_ptr, m * N + offs_n,
                  cnt_ptr + m * num_n + pid_n, pid_k, M * N, SPLIT_K, TICKET)  # fmt: skip


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
def _tiled_mma_kernel(
    x_ptr, qw_ptr, s_ptr, qz_ptr, perm_ptr, out_ptr, ws_ptr, cnt_ptr,
    M, N, K, group_size, k_per_split, stride_xm, stride_s, stride_qz, stride_om,
    CB: tl.constexpr, ZERO_V1: tl.constexpr, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr,
    BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
    TICKET: tl.constexpr, DOT_FP32: tl.constexpr, GROUP_M: tl.constexpr, SCALE_W: tl.constexpr,
    U: tl.constexpr,
):  # fmt: skip
    """Tensor-core tile `[BLOCK_M, BLOCK_N]` over one K slice: per 128-row block, P dots
    `x[:, slot i rows] @ (q_i − z)` (each K = R), then the block's scale on the fp32 sum."""
    P: tl.constexpr = 32 // CB
    R: tl.constexpr = KB // P
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = N // BLOCK_N
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    offs_r = tl.arange(0, R)
    # word (strip n // 64, row, column n % 64)
    w_cols = (offs_n // NB).to(tl.int64) * (K // P) * NB + offs_n % NB
    x_rows = x_ptr + tl.where(m_ok, offs_m, 0)[:, None] * stride_xm
    dt = x_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    k_begin = pid_k * k_per_split
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
