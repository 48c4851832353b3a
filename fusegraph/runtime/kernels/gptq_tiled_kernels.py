"""Triton kernels of the GPTQ matmul on the repacked ("tiled") layout (device code only): the
shared helpers and the GEMV; the tensor-core tiles and the dequantization pass are in
`gptq_tiled_mma.py`.

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

from fusegraph.runtime.kernels.gptq_asm import PREFETCH_L2, dot_asm, dq_asm

KB = tl.constexpr(128)  # rows of K per block (the interleave unit of the layout)
NB = tl.constexpr(64)  # columns per strip

DOT4_F16 = tl.constexpr(dot_asm(4, "f16"))
DOT4_BF16 = tl.constexpr(dot_asm(4, "bf16"))
DOT8_F16 = tl.constexpr(dot_asm(8, "f16"))
DQ4_F16 = tl.constexpr(dq_asm(4, "f16"))
DQ4_BF16 = tl.constexpr(dq_asm(4, "bf16"))
DQ8_F16 = tl.constexpr(dq_asm(8, "f16"))
PREFETCH_L2_ASM = tl.constexpr(PREFETCH_L2)


@triton.jit
def _prefetch_l2(run, n_words, LINES: tl.constexpr):
    """Ask L2 for the first LINES 128-byte lines of the int32 run `run[0:n_words]` (n_words a
    multiple of 32; lines past the run repeat its last line): the program's whole weight stream is
    requested at once, whatever the registers hold, so the loads that follow meet lines in flight."""
    offs = tl.minimum(tl.arange(0, LINES) * 32, n_words - 32)
    tl.inline_asm_elementwise(PREFETCH_L2_ASM, "=r,l", [run + offs], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _permute_cols_kernel(x_ptr, perm_ptr, y_ptr, K, stride_xm, BLOCK: tl.constexpr):
    """y[m, k] = x[m, perm[k]] for one row m and BLOCK columns a program (act-order's x, once a call)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = tl.program_id(1).to(tl.int64)
    mask = offs < K
    src = tl.load(perm_ptr + offs, mask=mask, other=0)
    tl.store(y_ptr + m * K + offs, tl.load(x_ptr + m * stride_xm + src, mask=mask), mask=mask)


@triton.jit
def _pdl_enter(PDL: tl.constexpr):
    """Programmatic dependent launch (PDL ≥ 1, Hopper): wait here until the previous kernel's
    writes are visible (nothing before this point reads or writes memory that a kernel writes);
    PDL == 2 then lets the next kernel launch at once."""
    if PDL >= 1:
        tl.extra.cuda.gdc_wait()
    if PDL == 2:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _pdl_leave(PDL: tl.constexpr):
    """PDL == 3: let the next kernel launch once the main loop is done (before the split-K tail)."""
    if PDL == 3:
        tl.extra.cuda.gdc_launch_dependents()


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
    PF_LINES: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """One fp16/bf16 row of x times one 64-column strip over one K slice; program (strip, split, row).

    Each step takes U blocks of 128 rows (`[U, R, 64]` words); a block has one group (the layout
    needs group_size % 128 == 0), so its scale multiplies the block's column sums once. PREFETCH
    loads the next step's operands before the math of this one (registers double-buffered: the
    loads are in flight during the math). PF_LINES > 0 asks L2 for the first PF_LINES lines of
    the program's weight run before anything else; PDL (see `_pdl_enter`) then waits for the
    previous kernel: only the weights, which no kernel writes, are touched before the wait.
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
    if PF_LINES > 0:
        _prefetch_l2(strip + (k_begin // P) * NB, (k_per_split // P) * NB, PF_LINES)
    _pdl_enter(PDL)
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
    _pdl_leave(PDL)
    num_n = N // NB
    _splitk_store(acc, out_ptr + m * stride_om + offs_n, offs_n < N, ws_ptr, m * N + offs_n,
                  cnt_ptr + m * num_n + pid_n, pid_k, M * N, SPLIT_K, TICKET)  # fmt: skip
