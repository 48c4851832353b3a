"""Host-side planning for the GPTQ matmuls: which CUDA kernel runs a call, with its plan (`cuda_plan`). The Triton
kernels' launch configuration (`pick_config`, `dequant_min_m`, `sm_count`) lives in `gptq_triton_plan.py` and the
act-order weight permutation (`act_order_prepare`) in `gptq_act_order.py`; both are re-exported here.

No Triton kernels live here, so this module is plain torch and is shared by the regular and
the interpreter-mode copies of `gptq_matmul.py`.
"""

from __future__ import annotations

from typing import Any

import torch

from fusegraph.runtime.kernels import gptq_cuda_wgmma as _wg
from fusegraph.runtime.kernels.gptq_act_order import act_order_prepare
from fusegraph.runtime.kernels.gptq_triton_plan import dequant_min_m, pick_config, sm_count

__all__ = ["act_order_prepare", "cuda_mid_m_plan", "cuda_plan", "cuda_small_m_plan", "dequant_min_m", "pick_config",
           "sm_count"]  # fmt: skip


# ---- the compiled CUDA kernel for small M (gptq_cuda.py) ------------------------------------------------

_CUDA_MAX_M = 16  # the small-M CUDA kernel's range (1.._CUDA_MAX_M); past it the mid-M kernel or Triton
_CUDA_MAX_M_SLOW = 4  # act-order / 8-bit take it to this M unless forced (H200 M=16: Triton won, 3rd session)
_CUDA_X_SLICE_BYTES = 64 * 1024  # a CTA's staged slice of x (M rows of its K slice) stays under this
# 4 bits, M ≤ this, one CTA of 8 warps an SM whose warps take ≤ 2 blocks each: 3 register buffers, all of a warp's words
# in flight at once (H200, 9th session, chained: o_proj M=1 5.98 vs 6.16 µs, M=4 6.35 vs 6.70, M=9 7.58 vs 7.86,
# M=16 8.98 vs 9.13; after act-order's gather / permutation M=1 6.56 vs 6.84, M=4 7.22 vs 8.16; down, 7 blocks a
# warp, 0.91x, and 8 bits 0.93x, so not there)
_CUDA_SMALL_BUFS3_MAX_M = 16
# On that one-CTA plan, each warp's words through a 2-stage cp.async ring (`cpa`) to the M given by (bits, whether a warp
# has ≤ 2 blocks); none where the key is missing:
# - (4, False), (8, True): registers cannot hold the words in flight (H200, 10th session, chained: down M=1 11.65-11.74
#   vs 12.59-12.61 µs, M=4 13.32 vs 13.87, act-order (x permuted first) M=1 13.35 vs 14.24, M=4 14.85 vs 16.27; 8-bit
#   o_proj M=1 7.80 vs 8.29, M=4 7.93 vs 8.58; not past M=8: o_proj M=16 1.00x);
# - (8, False): 8-bit down (7 blocks a warp) at M=1 only (H200, 15th session, chained, two calls: 17.86-17.87 vs
#   18.42-18.43 µs; M=2 18.70 vs 18.44, M=4 20.88-21.12 vs 18.71-18.85; 3 stages at M=1 20.31);
# - not (4, True), o_proj at 4 bits: its 3 buffers (1.03x plain, 0.96-0.97x act-order).
_CUDA_SMALL_CPA_MAX_M: dict[tuple[int, bool], int] = {(4, False): 8, (8, True): 8, (8, False): 1}


def cuda_small_m_plan(m: int, n: int, k: int, bits: int, sms: int, *, act_order: bool = False, bf16: bool = False,
                      forced: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """Launch plan of the CUDA small-M kernel (`gptq_cuda.py`) for `x [m, k] @ W [k, n]`, or None
    when it should not run (the Triton kernels do): M outside 1..16, act-order or 8 bits at M > 4
    (slower there than Triton; `forced` plans them anyway), bf16 at 8 bits, a shape off the
    repacked layout (N % 64, K % 128).

    Measured on an H200 (benchmarks/gptq_cuda_probe.py, 2026-11-30; docs/benchmarks.md): one CTA of 8 warps
    an SM where it fits, split-K the largest divisor d of K/128 with (N/64)·d ≤ SMs, ≥ 8 blocks and ≤ 64 KB of
    x a CTA (o_proj/down d = 2, a cluster: M=1 7.20 / 13.58 µs, 4 warps × 4 CTAs 7.77 / 14.65), with 3 register
    buffers at 4 bits where a warp has ≤ 2 blocks (`_CUDA_SMALL_BUFS3_MAX_M`: o_proj), or a 2-stage cp.async ring
    where registers cannot hold a warp's blocks (`_CUDA_SMALL_CPA_MAX_M`: 4-bit down and 8-bit o_proj to M = 8,
    8-bit down at M=1). Else 4 warps, the smallest d with (N/64)·d ≥ 1.4·SMs (larger while x passes 64 KB), a
    cluster at d = 2, else a ticket.
    `bufs` > 2 elsewhere, `l2pf`, `tma` and `fold` were slower on every shape: off.

    Example:
        >>> cuda_small_m_plan(1, 4096, 4096, 4, 132)
        {'split_k': 2, 'warps': 8, 'cluster': True, 'min_blocks': 1, 'bufs': 3}
    """
    if not 1 <= m <= _CUDA_MAX_M or n % 64 or k % 128 or bits not in (2, 3, 4, 8) or (bf16 and bits == 8):
        return None
    if not forced and m > _CUDA_MAX_M_SLOW and (act_order or bits == 8):
        return None  # measured slower than the Triton kernels there (docs/benchmarks.md)
    tiles, blocks = n // 64, k // 128
    divisors = [d for d in range(1, blocks + 1) if blocks % d == 0]
    fits = [d for d in divisors if tiles * d <= sms and blocks // d >= 8 and m * blocks // d * 256 <= 65536]
    if fits:  # one CTA of 8 warps an SM
        plan: dict[str, Any] = {
            "split_k": fits[-1],
            "warps": 8,
            "cluster": 2 <= fits[-1] <= 8,
            "min_blocks": 1,
        }
        two = blocks // fits[-1] <= 2 * 8  # ≤ 2 blocks a warp
        if m <= _CUDA_SMALL_CPA_MAX_M.get((bits, two), 0):
            plan["cpa"] = 2
        elif bits == 4 and m <= _CUDA_SMALL_BUFS3_MAX_M and two:
            plan["bufs"] = 3
        return plan
    split = next((d for d in divisors if tiles * d >= 1.4 * sms), blocks)
    while m * (blocks // split) * 256 > _CUDA_X_SLICE_BYTES and split < blocks:
        split = next(d for d in divisors if d > split)
    # registers (two blocks of words in flight): 168 a thread for 4 bits and M <= 8, about 230-240 else
    min_blocks = 3 if m <= 8 and bits != 8 else 2
    return {"split_k": split, "warps": 4, "cluster": split == 2, "min_blocks": min_blocks}


# ---- the compiled CUDA kernel for mid M (gptq_cuda_mid.py) ---------------------------------------------

_CUDA_MID_MAX_M = 64  # its accumulators (16 fp32 a thread per 8 rows of x) cap M at 64
# By default the mid-M kernel takes M from here on every shape (9..16: it beat the small-M kernel at M=16 on all
# four, H200: 10.7/10.1/30.5/20.8 us vs 13.9/11.7/49.8/26.6), below it on N ≥ _CUDA_MID_SMALL_M_MIN_N
_CUDA_MID_FROM_M = 9
# Past M=16, only shapes with at least this many (64-column strip, 128-row block) pairs: o_proj (2048) was
# slower than Triton at M=32 (13.6 vs 13.3 us) and M=64 (20.7 vs 18.3); qkv (3072) faster (14.3 vs 17.0, 21.8 vs 22.3)
_CUDA_MID_MIN_WORK = 2500
# M ≤ 8 (plain, or x permuted first) takes the mid-M kernel on shapes of N ≥ this (H200 M=1: qkv 8.55 vs 9.20 µs,
# gate_up 24.90 vs 25.46; M=4: 8.81 vs 9.75, 25.57 vs 30.09; 8-bit M=1 qkv 11.09 vs 12.29); o_proj and down do not.
# qkv M=1 too since the fourteenth session's mid-M loop (H200, 15th session, chained, 3 rounds: 6.69-6.80 vs the small-M
# kernel's one CTA an SM with its ring, 6.89-7.01, which the 10th session had measured faster, 6.98 vs 7.17)
_CUDA_MID_SMALL_M_MIN_N = 6144
# M ≤ this (one n-tile of x), 4/8 bits, fp16: < 2 CTAs an SM get twice the split where all fit at 16 warps an SM (H200,
# 6th session: gate_up split 4, M=1 24.6 -> 22.4-22.7 µs, M=8 26.8 -> 24.4, 8-bit M=1 34.8 -> 32.9; at 3 CTAs an SM,
# a 2nd wave, 28.5; split 2 at 4 an SM 25.4; qkv at split 8 stays: 4 an SM was 8.95 vs 8.73)
_CUDA_MID_ONE_TILE_M = 8
# M ≤ this (one n-tile of x): the scale leaves the inner loop ("sfold": each block's fp32 sums scaled once), 4 bits, or
# 8 bits where a thread keeps 255 registers (at 128 its partial sums spill: gate_up M=1 41.5 vs 33.8 µs). H200, seventh
# session: gate_up M=1 22.9 -> 20.2 µs, M=8 24.8 -> 21.7; qkv 8.75 -> 8.73, M=8 9.48 -> 9.34; 8-bit qkv M=4 11.28 ->
# 10.88. (a probe without the multiply: gate_up M=1 18.7 µs.) M 9..16, two n-tiles: 4 bits only, on CTAs of 4 strips
# (H200, 9th session, chained: qkv M=16 9.85 vs 10.00 µs, 9.86 vs 10.17 in another run; gate_up 29.10 vs 29.82) and, with
# their ring, of 2 (`_CUDA_MID_RING`)
_CUDA_MID_SFOLD_MAX_M = 8
# CTAs of 2 strips (down: 224 CTAs; 8-bit o_proj: 256): a 3-stage cp.async ring (`cpa`), by bits: (from M, to M, CTAs an
# SM for `__launch_bounds__`). H200, 15th session, chained, µs, 3 rounds each:
# - 4 bits, with the scale out of the loop: down M=16 16.59-16.77 vs the 10th session's rule (the ring alone at 2 CTAs an
#   SM, M 9..16) 18.47-18.93; M=9 16.06-16.20 vs 17.94-17.98 (the ring and sfold at 2 an SM 16.91-17.11, sfold alone
#   19.12-19.40, neither 20.08-20.29); M=8 14.26-14.35 vs sfold alone 17.54, M=5 14.01-14.08 and M=6 13.93-14.00 vs the
#   small-M kernel's 4-warp CTAs, 15.66-15.96 (where its one CTA an SM does not fit, `_small_or_mid`);
# - 8 bits (no sfold past 8 rows): down M=12 21.29-21.41 vs 25.33-25.64, M=16 21.83-22.01 vs 25.30-25.47 (at 4 an SM
#   22.40-22.57), o_proj M=16 11.34-11.36 vs 11.93-12.08; not at M ≤ 8 (down M=5 24.06-24.42 vs 22.79-23.14, M=8 23.9-24.1
#   vs 23.0-23.1; o_proj M=8 11.4 vs 9.8);
# - not on 4-strip CTAs (qkv, gate_up M=16 4 bits: 1.25-1.35x slower), nor 4-bit down at M ≤ 4 (the small-M kernel's one
#   CTA an SM: M=2 12.15-12.40 vs 13.26-13.57).
_CUDA_MID_RING: dict[int, tuple[int, int, int]] = {4: (5, 16, 4), 8: (9, 16, 2)}
# One n-tile of x on CTAs of 4 strips that stay 2 an SM (qkv at M ≤ 8): "l2pf" 2, each warp's second block asked of
# L2 with its first (before the PDL wait). H200, thirtieth session, chained, three rounds, µs, default / l2pf 2: M=1
# 6.73-6.88 / 6.64-6.74, 8 bits 9.32-9.49 / 9.01-9.27, M=4 6.78-6.92 / 6.77-6.85. More blocks ahead were slower
# everywhere (qkv M=1 7.2-7.4 at 4 to 32; gate_up M=1 20.3-23.3 against 18.3-18.7; down and o_proj too).
_CUDA_MID_L2PF = 2


def cuda_mid_m_plan(m: int, n: int, k: int, bits: int, sms: int, *, act_order: bool = False, bf16: bool = False,
                    forced: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """Launch plan of the CUDA mid-M kernel (`gptq_cuda_mid.py`) for `x [m, k] @ W [k, n]`, or None
    when it cannot or should not run: M outside 1..64, act-order or 8 bits unless `forced` (`cuda_plan`
    forces them where they were measured faster), bf16 at 8 bits, a shape off the repacked layout.
    (`cuda_plan` decides which M take it.)

    Measured on an H200 (benchmarks/gptq_sweep.py "midm", 2026-11-30; docs/benchmarks.md): the
    split-K partial sums must meet in a thread-block cluster (the ticket's workspace at split 14-16
    was 2-4x slower), so split-K ≤ 8. A CTA takes 4 64-column strips with the smallest split d ≤ 8
    that gives (N/256)·d ≥ 1.4·SMs CTAs (qkv d=8, gate_up d=2); where none does, 2 strips and the
    same rule (o_proj d=8, down d=7), the largest d ≤ 8 if still none. That was the fastest
    variant on every shape at M = 16, 32 and 64 but one (gate_up M=16: 2 strips, 1% faster).
    Registers are capped for 8 warps an SM (255 a thread at 4 bits and M > 56, no spills). At M ≤ 8
    (4 or 8 bits, fp16), fewer than 2 CTAs an SM get twice the split at 16 warps an SM where all
    still fit at once (`_CUDA_MID_ONE_TILE_M`: gate_up M=1 d = 4, 9% faster); where the split is at its cap (qkv)
    the CTAs stay 4 strips (192; 15th session, H200, chained: M=1 6.69-6.80 µs, M=4 6.96-6.99 against 2 strips at M=4,
    7.04-7.17, the 7th session's rule). The scale leaves the inner loop (`_CUDA_MID_SFOLD_MAX_M`, "sfold": gate_up
    M=1 12% faster), and at M 9..16 at 4 bits. Those 4-strip CTAs at M ≤ 8 ask L2 for each warp's second block
    first (`_CUDA_MID_L2PF`). CTAs of 2 strips stream through a 3-stage cp.async ring
    (`_CUDA_MID_RING`: 4-bit down M=16 11% faster than the ring alone, M=8 23% faster than without; 8-bit down
    M 9..16 16% faster, o_proj M=16 5%).

    Example:
        >>> cuda_mid_m_plan(64, 6144, 4096, 4, 132)
        {'split_k': 8, 'warps': 4, 'cluster': True, 'min_blocks': 2, 'mid': True}
    """
    if not 1 <= m <= _CUDA_MID_MAX_M or n % 64 or k % 128 or bits not in (2, 3, 4, 8) or (bf16 and bits == 8):
        return None
    if not forced and (act_order or bits == 8):
        return None
    blocks = k // 128
    small = [d for d in range(1, min(8, blocks) + 1) if blocks % d == 0]
    split: int | None = None
    for warps in [w for w in (4, 2) if (n // 64) % w == 0] or [1]:
        split = next((d for d in small if (n // 64 // warps) * d >= 1.4 * sms), None)
        if split is not None:
            break
    if split is None:
        split = small[-1]
    ctas, min_blocks = (n // 64 // warps) * split, 8 // warps
    # one n-tile of x: 128 registers a thread suffice, so twice the split keeps every CTA resident (16 warps an SM)
    one_tile = m <= _CUDA_MID_ONE_TILE_M and bits in (4, 8) and not bf16
    doubled = one_tile and ctas < 2 * sms and 2 * split in small and 2 * ctas <= (16 // warps) * sms
    if doubled:
        split, min_blocks = 2 * split, 16 // warps
    plan = {"split_k": split, "warps": warps, "cluster": split > 1, "min_blocks": min_blocks, "mid": True}
    if (
        one_tile and not doubled and warps == 4
    ):  # qkv: each warp's second block asked of L2 first (`_CUDA_MID_L2PF`)
        plan["l2pf"] = _CUDA_MID_L2PF
    ring_from, ring_to, ring_ctas = _CUDA_MID_RING.get(bits, (0, -1, 0))
    if warps == 2 and ring_from <= m <= ring_to:
        plan |= {"cpa": 3, "min_blocks": ring_ctas}
    one_tile_fold = m <= _CUDA_MID_SFOLD_MAX_M and (bits == 4 or warps * min_blocks <= 8)
    if one_tile_fold or (m <= 16 and bits == 4):  # two n-tiles: at 4 bits
        plan["sfold"] = True
    return plan


# act-order (H200, docs/benchmarks.md): the small-M kernel gathers x through perm itself up to this M where its
# gathers, (N/64)·M·K values, are at most _CUDA_ACT_GATHER_MAX_WORK; elsewhere x is permuted once (`xperm`) and the
# plain plan runs on the row-sorted weight (M=4: faster than the gather on all four shapes). M=1, chained (9th
# session), gather / permuted: o_proj (262K values) 6.80-7.26 / 7.58-7.85 µs; down (917K) 14.52-14.77 / 14.16-14.32;
# and to _CUDA_ACT_GATHER_RING_MAX_WORK where the plain plan is the one-CTA small-M plan with its ring (4 bits): qkv
# (393K, 10th session) 7.78 / 8.36 (permuted on the mid-M plan, 9th session: 8.26-8.32)
_CUDA_ACT_GATHER_MAX_M, _CUDA_ACT_GATHER_MAX_WORK, _CUDA_ACT_GATHER_RING_MAX_WORK = 1, 1 << 18, 1 << 19
# the gather with its loads ahead ("perm_ahead"), or from all of x in shared memory ("xfull"): slower, so off
_CUDA_ACT_AHEAD = False
# the gather that the ring's plan extends (qkv M=1) keeps its words after the chain's wait ("early": 0): H200,
# thirtieth session, three calls, without / with early 7.80-7.89 / 7.98-8.27 µs (o_proj's gather, in registers,
# gains with it: 5.82 against 6.34)
_CUDA_ACT_RING_GATHER_EARLY = 0
# x permuted (`gptq_cuda_permute.permute_rows`), the kernel launched with PDL (sm_90), at these M, the mid-M kernel
# only to this K (H200, x permuted first without / with: M=16 qkv 12.49 / 12.10 us, o_proj 11.87 / 11.34; M=4 qkv
# 11.15 / 10.45; gate_up M=1 26.59 / 25.81; mid-M down (K=14336) M=16 22.82 / 30.36; small-M down M=4 16.76 / 15.74)
_CUDA_ACT_PDL: tuple[int, int] | None = (1, 16)
_CUDA_ACT_PDL_MAX_K = 8192
# act-order on the wgmma kernel: launched with PDL after the permutation of x ("pdl": P, P·stages weight blocks a strip
# asked of L2 before its griddepcontrol.wait, which comes before x's first load); 0: no PDL
_CUDA_ACT_WGMMA_PDL = 1
# 8 bits: the mid-M kernel for M 5..16 (M=16: 0.75-0.90x Triton's time on all four shapes; both take M 9..16 in
# one 16-row tile; M=8, 7th session: o_proj 10.0 vs 13.5 µs, down 24.1 vs 34.5) and past 16 on shapes of at least
# this N (M=64: gate_up 0.67x; qkv, o_proj, down 1.13-1.32x)
_CUDA_8BIT_MID_MIN_N = 16384


def _small_or_mid(m: int, n: int, k: int, bits: int, sms: int, *, act_order: bool, bf16: bool, forced: bool,
                  mid: bool | None, xperm: bool | None) -> dict[str, Any] | None:  # fmt: skip
    """`cuda_plan` for the small-M and mid-M kernels (see there), without the "kernel" key."""
    if act_order:
        work = (n // 64) * m * k
        small_work = m <= _CUDA_ACT_GATHER_MAX_M and (
            work <= _CUDA_ACT_GATHER_MAX_WORK
            or (  # further where the plain plan is the one-CTA small-M plan with its ring
                bits == 4
                and work <= _CUDA_ACT_GATHER_RING_MAX_WORK
                and bool((cuda_small_m_plan(m, n, k, bits, sms, bf16=bf16) or {}).get("cpa"))
            )
        )
        gather = xperm is False or (xperm is None and small_work)
        if gather and m > _CUDA_ACT_GATHER_MAX_M and not forced:
            return None  # the in-kernel gather was slower than Triton there (docs/benchmarks.md)
        plan = _small_or_mid(m, n, k, bits, sms, act_order=False, bf16=bf16, forced=forced,
                             mid=False if gather and mid is None and m < _CUDA_MID_FROM_M else mid, xperm=None)  # fmt: skip
        # the gather that the ring's plan extends (measured there only)
        if plan is not None and gather and plan.get("cpa") and work > _CUDA_ACT_GATHER_MAX_WORK:
            plan["early"] = _CUDA_ACT_RING_GATHER_EARLY
        if plan is None or (gather and not (_CUDA_ACT_AHEAD and xperm is None)):
            return plan
        pdl = (_CUDA_ACT_PDL is not None and _CUDA_ACT_PDL[0] <= m <= _CUDA_ACT_PDL[1]
               and (k <= _CUDA_ACT_PDL_MAX_K or not plan.get("mid")))  # fmt: skip
        return plan | ({"perm_ahead": True} if gather else {"xperm": True, "xperm_pdl": pdl})
    kw = {"act_order": act_order, "bf16": bf16, "forced": forced}
    wide = m <= _CUDA_MAX_M or n >= _CUDA_8BIT_MID_MIN_N  # 8 bits past M=16: only wide shapes (measured)
    if mid is None and bits == 8 and not forced and _CUDA_MID_FROM_M <= m <= _CUDA_MID_MAX_M and wide:
        return cuda_mid_m_plan(m, n, k, bits, sms, **(kw | {"forced": True}))
    if mid is None and m < _CUDA_MID_FROM_M and n >= _CUDA_MID_SMALL_M_MIN_N and not (bf16 and bits == 8):
        return cuda_mid_m_plan(m, n, k, bits, sms, **(kw | {"forced": True}))
    # 8 bits at M 5..8 (past the small-M kernel's range): the mid-M kernel, not Triton
    eight_past_small = bits == 8 and not bf16 and _CUDA_MAX_M_SLOW < m < _CUDA_MID_FROM_M
    if mid is None and eight_past_small:
        return cuda_mid_m_plan(m, n, k, bits, sms, **(kw | {"forced": True}))
    if mid is None:
        big = (n // 64) * (k // 128) >= _CUDA_MID_MIN_WORK or forced or m <= _CUDA_MAX_M
        plan = cuda_mid_m_plan(m, n, k, bits, sms, **kw) if m >= _CUDA_MID_FROM_M and big else None
        # M 9..16: the small-M kernel where its one CTA of 8 warps an SM fits (H200, 9th session, chained, o_proj M=16:
        # 8.98-9.16 vs 10.13-10.21 µs; after act-order's permutation of x, M=9 9.54 vs 10.50, M=16 10.98 vs 11.02)
        one = cuda_small_m_plan(m, n, k, bits, sms, **kw) if m <= _CUDA_MAX_M else None
        plan = one if plan and one is not None and one["warps"] == 8 else plan
        # 4 bits, M < _CUDA_MID_FROM_M where that one CTA fits at M=1 but x's slice outgrows it (past 64 KB: down from
        # M=5): the mid-M kernel with its ring (`_CUDA_MID_RING`; H200, 15th session: down M=5 14.01-14.08 vs the 4-warp
        # CTAs' 15.66-15.74 µs). Shapes too small for that one CTA at any M (K/128 < 8) were not measured: unchanged.
        outgrown = one is not None and one["warps"] != 8 and m < _CUDA_MID_FROM_M
        if plan is None and bits == 4 and outgrown:
            at_one = cuda_small_m_plan(1, n, k, bits, sms, **kw)
            plan = cuda_mid_m_plan(m, n, k, bits, sms, **kw) if at_one and at_one["warps"] == 8 else None
        return plan if plan is not None else one
    return cuda_mid_m_plan(m, n, k, bits, sms, **kw) if mid else cuda_small_m_plan(m, n, k, bits, sms, **kw)


# act-order takes the wgmma kernel's default ranges from this M: below it (plain o_proj and qkv at M = 14..16), after the
# permutation of x, it tied or lost (twenty-fourth session, call 5), so act-order keeps the small- and mid-M plans there
_ACT_ORDER_WGMMA_MIN_M = 17


def _act_order_wgmma(m: int, n: int, k: int) -> bool:
    """Whether act-order takes the wgmma kernel where plain does (x permuted once first, M·K values, the kernel
    launched with PDL under it) rather than the dequantize path (W's N·K values written once in checkpoint row
    order, cuBLAS on the unpermuted x): while M ≤ N, the permutation moving fewer bytes, from M =
    `_ACT_ORDER_WGMMA_MIN_M` (below it the small- and mid-M kernels' act-order plans run). H200, fifth session run B,
    wgmma / dequantize at M=256: qkv 28.6 / 40.2 µs, o_proj 18.8 / 26.5, gate_up 97.9 / 182.6, down 54.3 / 93.8;
    M=1024: 87.5 / 86.5 (a tie), 53.9 / 57.7, 386.2 / 449.3, 182.3 / 203.5."""
    return _ACT_ORDER_WGMMA_MIN_M <= m <= n


def cuda_plan(
    m: int,
    n: int,
    k: int,
    bits: int,
    sms: int,
    *,
    act_order: bool = False,
    bf16: bool = False,
    forced: bool = False,
    mid: bool | None = None,
    xperm: bool | None = None,
    wgmma: bool | None = None,
    cap: tuple[int, int] | None = None,
    configured: bool = False,
) -> dict[str, Any] | None:
    """Which CUDA kernel runs this call, and its plan, or None (the Triton kernels run): the one place
    that decides. `gptq_cuda.maybe_gptq_cuda` switches on the plan's "kernel":

    - "wgmma": the Hopper wgmma kernel (`gptq_cuda_wgmma.maybe_wgmma`, the plan's "wgmma" True) when
      `wgmma` is asked for, or for a config-less (`configured` False) call on sm_90 (`cap`) where
      `gptq_cuda_wgmma.wgmma_takes_by_default` says so (measured faster there);
    - "mid" / "small": the mid-M / small-M kernels, as follows.

    `mid` None: the mid-M kernel for M 9..64 where it takes the call (past M=16 only on shapes of at
    least `_CUDA_MID_MIN_WORK` strip-blocks, unless `forced`; at M ≤ 16 not where the small-M kernel's plan is
    one CTA of 8 warps an SM), for M ≤ 8 on N ≥ `_CUDA_MID_SMALL_M_MIN_N`, and at 4 bits for M ≤ 8 where that one CTA
    fits at M = 1 but x's slice outgrows it (down from M=5); else the small-M kernel for M ≤ 16.
    True: the mid-M kernel at any M ≤ 64; False: the small-M kernel only (M ≤ 16).
    8 bits: the mid-M kernel for M 5..16 (≤ 16 on N ≥ 6144), and to 64 on shapes of N ≥ `_CUDA_8BIT_MID_MIN_N`.
    Act-order takes the plain plan (None where it is None): up to M = `_CUDA_ACT_GATHER_MAX_M`, where
    the gathers are at most `_CUDA_ACT_GATHER_MAX_WORK` values (`_CUDA_ACT_GATHER_RING_MAX_WORK` where the plain
    plan is the small-M kernel's one CTA an SM with a ring, 4 bits), its kernel gathers x through perm (with
    {"perm_ahead": True} if `_CUDA_ACT_AHEAD`; past the first limit, {"early": `_CUDA_ACT_RING_GATHER_EARLY`});
    elsewhere (or with `xperm` True) the plan gets
    {"xperm": True, "xperm_pdl": M in `_CUDA_ACT_PDL` and K ≤ `_CUDA_ACT_PDL_MAX_K`}: x is permuted once (with
    "xperm_pdl" the kernel launched with programmatic dependent launch after the permutation), then the kernel
    runs without perm. `xperm` False: the in-kernel gather (past `_CUDA_ACT_GATHER_MAX_M` only when `forced`).

    Example:
        >>> cuda_plan(64, 6144, 4096, 4, 132)["kernel"]
        'mid'
        >>> cuda_plan(64, 4096, 4096, 4, 132) is None  # o_proj at M=64: Triton
        True
        >>> cuda_plan(16, 6144, 4096, 4, 132, act_order=True)["xperm"]
        True
        >>> cuda_plan(128, 28672, 4096, 4, 132, cap=(9, 0))["kernel"]  # gate_up at M=128
        'wgmma'
    """
    if wgmma:
        return {"kernel": "wgmma", "wgmma": wgmma}
    if not configured and cap == (9, 0):  # the Hopper kernels' measured default ranges
        dtype = torch.bfloat16 if bf16 else torch.float16
        if _wg.wgmma_takes_by_default(m, n, k, bits, dtype, cap) and (
            not act_order or _act_order_wgmma(m, n, k)
        ):
            pdl = {"pdl": _CUDA_ACT_WGMMA_PDL} if act_order and _CUDA_ACT_WGMMA_PDL else {}
            return {"kernel": "wgmma", "wgmma": True} | pdl
    plan = _small_or_mid(m, n, k, bits, sms, act_order=act_order, bf16=bf16, forced=forced, mid=mid,
                         xperm=xperm)  # fmt: skip
    return None if plan is None else {"kernel": "mid" if plan.get("mid") else "small"} | plan
