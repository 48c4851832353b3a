"""CUDA C++ source of the warp-specialized Hopper RS-wgmma GPTQ kernel (`gptq_cuda_wgmma.py` compiles it for sm_90a).

`fg_gptq_rswg` multiplies x `[M, K]` (fp16 or bf16; 8 bits: fp16) by a plain 4- or 8-bit W in the tiled
layout of `fg.gptq.repack` (`gptq_cuda_src.py`'s docstring; strip s, 128-row block b: 16 (8-bit: 32) word
rows of 64 columns, 4 (8) KB contiguous) with `wgmma.mma_async.m64nNk16` (f32 accumulate), N = TOK tokens ≤ 256:

- A CTA is one producer warpgroup and NCW consumer warpgroups; consumer c owns the 64-column strip
  NCW·blockIdx.y + c, all share one tile of TOK rows of x (blockIdx.x) and one K slice (blockIdx.z of
  SPLIT, a cluster when SPLIT > 1, need not divide K/128), or with SK a stream-K run of (tile, block)
  pairs (gridDim.x resident CTAs). `setmaxnreg` gives the consumers the registers.
- Producer: each 128-row block into a STAGES-deep ring (1024-byte aligned stages): with TMA x's
  block as two boxes of 64 values x TOK rows (`cp.async.bulk.tensor`, 128-byte swizzle, rows past M
  zero; `mbarrier.expect_tx`), else 8x8 core matrices (no swizzle) by 16-byte cp.asyncs; the strips'
  words by cp.async (chunk (r, cg) of word row r at r·16 + (cg ^ 2(r & 3)): the consumers' word loads
  hit 32 banks), their scales and zero words; `cp.async.mbarrier.arrive.noinc` arrives on `full`.
- Consumer warp w: A rows 16w + g and 16w + 8 + g are the strip's columns 16w + g and 16w + 8 + g;
  a lane takes its 8 (8-bit: 16, 4 at a time) words of a block from shared memory and for each 16-row
  step dequantizes its 4 A registers (lop3 / prmt magic numbers, scale folded, `SCALED_DEQUANT`) into one of
  INFL register sets, so step s + 1 is dequantized while steps s - INFL + 2 .. s run (`wgmma.wait_group INFL - 1`).
  B = x^T through a descriptor (K-major: SW128, 1024-byte 8-row groups, or no swizzle, LBO TOK·16, SBO 128). A stage
  is released (`empty`) once its last wgmma is complete.
- Epilogue (`gptq_cuda_wgmma_ws_parts.py`): stores from registers or (OSTAGE) staged through the ring, or the
  cluster's split-K sum through distributed shared memory in rank order, or stream-K's ticket sum of a split tile.
"""

from __future__ import annotations

from fusegraph.runtime.kernels.gptq_cuda_ptx import HELPERS, SCALED_DEQUANT
from fusegraph.runtime.kernels.gptq_cuda_wgmma_spec import META, RswgSpec, rswg_smem_bytes, rswg_stage_bytes
from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_parts import (
    CLUSTER_SUM,
    CONSUMER_STORE,
    SK_EPILOGUE,
    X_ZERO_FILL,
    ws_device,
)

__all__ = ["RSWG_KERNEL_NAME", "RswgSpec", "rswg_kernel_source", "rswg_smem_bytes"]

RSWG_KERNEL_NAME = "fg_gptq_rswg"

_SOURCE = r"""
#define BITS %(bits)d
#define WBYTES (R * 256)  // a strip's words of one 128-row block
#define QG (R / 8)  // groups of 8 word rows a lane reads a block (2 or 4)
#define ZW (BITS * 2)  // zero words of a strip (64 columns)
#define PDL %(pdl)d
#define OSTAGE %(ostage)d  // SPLIT = 1: the outputs staged in shared memory (fp32), stored by rows (16-byte stores)
#define MC %(mc)d  // x multicast: the two CTAs of a cluster (column tiles 2j, 2j + 1) each load half of x's block into both
#define SRED %(sred)d  // split-K: each CTA of the cluster sums its band of RS rows, sent to it by st.async
#define RS ((TOK / 8 + SPLIT - 1) / SPLIT * 8)
#define BF16 %(bf16)d
#define TOK %(tok)d
#define MTT (TOK / 8)
#define NACC (TOK / 2)
#define SPLIT %(split)d
#define ZERO_V1 %(zero_v1)d
#define STAGES %(stages)d
#define INFL %(infl)d  // a consumer's 16-row steps in flight (wgmma groups; its A register sets): 2, 4 or 8
#define NCW %(ncw)d
#define STAGE_BYTES %(stage_bytes)d
#define XBYTES (TOK * 256)
#define META %(meta)d
#define VRED %(vred)d
#define SK %(sk)d
#define TMA %(tma)d  // x's blocks by the copy engine (a tensor map, 128-byte swizzle), else cp.async
#define PROBE %(probe)d  // benchmarks only, wrong results: 1 no dequant, 2 no x loads, 3 no wgmma, 4 no word loads,
                        // 5 no blocks (launch, prologue, epilogue), 6 no blocks and no epilogue
#define FSTRIDE (NCW * 64 + 4)  // split-K sums: a row's floats (padded: the fragment stores hit distinct banks)
%(helpers)s%(scaled_dequant)s%(device)sextern "C" __global__ void
#if SPLIT > 1
__cluster_dims__(1, 1, SPLIT)
#elif MC
__cluster_dims__(1, 2, 1)
#endif
__launch_bounds__(128 * (NCW + 1), %(minb)d)
fg_gptq_rswg(const u16* __restrict__ x, const u32x4* __restrict__ qw, const u16* __restrict__ sc,
             const u32* __restrict__ qz, u16* __restrict__ out, int M, int N, int K, int group_size, int blocks,
             int stride_xm, int stride_s, int stride_qz, int stride_om, int tiles_m, int* __restrict__ cnt,
             float* __restrict__ ws, const __grid_constant__ TmaDesc tmx) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, wg = tid >> 7;
  const u32 bars = smem_u32(smem);  // full[STAGES], then empty[STAGES]; the stream-K flag at 240
  const u32 ring = (bars + 256 + 1023) & ~1023u;  // 1024-byte aligned stages (the swizzle's period)
  unsigned char* ringp = smem + (ring - bars);
#if SK  // stream-K: CTA g takes units [g·U/G, (g+1)·U/G) of the U = tiles · blocks (tile, block) pairs
  const int G = gridDim.x, gc = blockIdx.x;
  const int U = tiles_m * (N / (64 * NCW)) * blocks;  // (< 2^31: the host checks)
  const int u0 = (int)((long long)gc * U / G), u1 = PROBE >= 5 ? u0 : (int)((long long)(gc + 1) * U / G);
#else
  const int m0 = blockIdx.x * TOK, strip0 = blockIdx.y * NCW, ks = blockIdx.z;
  const int kb0 = ks * blocks / SPLIT, bps = PROBE >= 5 ? 0 : (ks + 1) * blocks / SPLIT - kb0;  // (need not divide)
  const int mc = M - m0 < TOK ? M - m0 : TOK;  // rows of x this CTA takes
#endif
%(zero_fill)s  fence_proxy_async();  // those zeros (generic stores) are read by wgmma (the async proxy)
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init_n(bars + 8 * s, 128 + TMA);  // full: the producer's 128 threads (+ the copy engine's bytes)
      mbar_init_n(bars + 8 * (STAGES + s), MC ? 8 * NCW : 128 * NCW);  // empty: every consumer thread (MC: warp of both)
    }
    if (SRED) mbar_init_n(bars + 8 * (2 * STAGES), 1);  // the split-K band's parts (st.async bytes)
    mbar_init_fence();
  }
#if MC
  cluster_sync();  // the peer's barriers are ready before its x arrives here
#else
  __syncthreads();
#endif

  if (wg == 0) {  // ---------------- producer ----------------
    %(dec)s
    const int p = tid;
    int s = 0;
    u32 ph = 1;  // a fresh barrier counts its phase before 0 as complete: the first STAGES waits pass
#if SK
#if PDL
    pdl_wait();  // x (and the workspace) after the kernel before
    pdl_trigger();  // after the wait: a kernel launched with PDL after this one may start
#endif
#pragma unroll 1
    for (int u = u0; u < u1; ++u) {
      const int tile = u / blocks, blk = u %% blocks;
      const int m0 = (tile %% tiles_m) * TOK, strip0 = (tile / tiles_m) * NCW;
      const int mt = M - m0 < TOK ? M - m0 : TOK;
      const u16* xrow = x + (u64)m0 * stride_xm;
      mbar_wait(bars + 8 * (STAGES + s), ph);
      const u32 st = ring + s * STAGE_BYTES;
      const int kbase = blk * 128;
#if TMA
      (void)mt; (void)xrow;
      if (p == 0) x_tma(st, &tmx, kbase, m0, bars + 8 * s);
#else
      for (int c = p; c < TOK * 16; c += 128) {  // every row: those past M zero-filled (src-size 0)
        const int m = (c & 7) + 8 * (c >> 7), cc = (c >> 3) & 15;
        const bool in = m < mt;
        cp16z(st + (cc * MTT + (m >> 3)) * 128 + (m & 7) * 16, in ? xrow + (u64)m * stride_xm + kbase + cc * 8 : x,
              in ? 16u : 0u);
      }
#endif
#else
    const u16* xrow = x + (u64)m0 * stride_xm;
    const int rows8 = (mc + 7) & ~7;
#if PDL  // the weights do not depend on the kernel before: ask L2 for the first blocks, then wait for x
    if (p < NCW) {
      const int nb = bps < PDL * STAGES ? bps : PDL * STAGES;
      if (nb > 0) prefetch_l2(qw + ((u64)(strip0 + p) * (K / P) + (u64)kb0 * R) * 16, (u32)nb * WBYTES);
    }
    pdl_wait();
    pdl_trigger();  // after the wait: a kernel launched with PDL after this one may start
#endif
#pragma unroll 1
    for (int u = 0; u < bps; ++u) {
      const int blk = kb0 + u;
      mbar_wait(bars + 8 * (STAGES + s), ph);
      const u32 st = ring + s * STAGE_BYTES;
      const int kbase = blk * 128;
#if TMA
      (void)xrow; (void)rows8;
#if MC
      if (p == 0) x_tma_mc(st, &tmx, kbase, m0, bars + 8 * s);
#else
      if (p == 0) x_tma(st, &tmx, kbase, m0, bars + 8 * s);
#endif
#else
      for (int c = p; c < rows8 * 16; c += 128) {  // x: 8 rows x 4 chunks a warp (sectors whole, banks distinct)
        const int m = (c & 7) + 8 * (c >> 7), cc = (c >> 3) & 15;
        if (m < mc && PROBE != 2)
          cp16(st + (cc * MTT + (m >> 3)) * 128 + (m & 7) * 16, xrow + (u64)m * stride_xm + kbase + cc * 8);
      }
#endif
#endif
      const int grp = group_size == 128 ? blk : blk * 128 / group_size;
#pragma unroll
      for (int c = 0; c < NCW; ++c) {
        const int strip = strip0 + c;
        const u32x4* src = qw + ((u64)strip * (K / P) + (u64)blk * R) * 16;  // WBYTES / 16 chunks
        const u32 wdst = st + XBYTES + c * WBYTES;
#pragma unroll
        for (int h = 0; h < WBYTES / 2048; ++h) {
          const int ci = p + 128 * h, r = ci >> 4, cg = ci & 15;
          if (PROBE != 4) cp16(wdst + (r * 16 + (cg ^ (2 * (r & 3)))) * 16, src + ci);
        }
        const u32 mdst = st + XBYTES + NCW * WBYTES + c * META;
        if (p < 8) cp16(mdst + p * 16, sc + (u64)grp * stride_s + strip * 64 + p * 8);
        else if (p < 8 + ZW / 4) cp16(mdst + 128 + (p - 8) * 16, qz + (u64)grp * stride_qz + strip * ZW + (p - 8) * 4);
      }
      cp_arrive(bars + 8 * s);
      if (++s == STAGES) s = 0, ph ^= 1u;
    }
    cp_wait<0>();
#if SPLIT > 1 && SRED && PROBE < 6
    cluster_sync();  // the consumers' two (CONSUMER_STORE)
    cluster_sync();
#endif
  } else {  // ---------------- consumers ----------------
    %(inc)s
    const int cw = wg - 1, ctid = tid & 127, lane = tid & 31, warp = ctid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int c0 = 16 * warp + g, c1 = c0 + 8;  // this lane's A rows g, g + 8: the strip's columns c0, c1
    float acc[NACC];
#pragma unroll
    for (int i = 0; i < NACC; ++i) acc[i] = 0.f;
#if TMA  // K-major, 128-byte swizzle: 8-row groups 1024 bytes apart, a 16-row step 32 bytes into its 64-wide half
    const u64 dconst = (1ull << 16) | ((u64)(1024 >> 4) << 32) | (1ull << 62);
#else
    const u64 dconst = ((u64)((MTT * 128) >> 4) << 16) | ((u64)(128 >> 4) << 32);
#endif
    // word (r, c) of a strip's block at chunk r·16 + ((c >> 2) ^ 2(r & 3)), word c & 3; r & 3 == t here
    const int woff0 = (((c0 >> 2) ^ (2 * t)) * 4 + (c0 & 3)) * 4, woff1 = (((c1 >> 2) ^ (2 * t)) * 4 + (c1 & 3)) * 4;
    // the lane's offsets in a stage (its words at row t, zero words, scales) and its zeros' shifts, computed once and
    // held (`hold`), not re-derived from the thread index each block
    const u32 mo = XBYTES + NCW * WBYTES + cw * META;
    u32 lw0 = XBYTES + cw * WBYTES + t * 256 + woff0, lw1 = XBYTES + cw * WBYTES + t * 256 + woff1;
    u32 lz0 = mo + 128 + 4 * (c0 / P), lz1 = mo + 128 + 4 * (c1 / P), ls0 = mo + 2 * c0, ls1 = mo + 2 * c1;
    u32 zsh0 = BITS * (c0 %% P), zsh1 = BITS * (c1 %% P);
    hold(lw0), hold(lw1), hold(lz0), hold(lz1), hold(ls0), hold(ls1), hold(zsh0), hold(zsh1);
    u32 a[INFL][4];
    int s = 0, pend = -1;  // pend: the stage whose wgmmas are the last in flight, to release once done
    u32 ph = 0;
#if SK
#pragma unroll 1
    for (int u = u0; u < u1; ++u) {
#else
#pragma unroll 1
    for (int u = 0; u < bps; ++u) {
#endif
      mbar_wait(bars + 8 * s, ph);
#if !TMA  // x by cp.async (the generic proxy) read by wgmma (the async proxy); the copy engine's x needs no fence
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
      const unsigned char* st = ringp + s * STAGE_BYTES;
      u32 wv[QG][2][2];  // [qq][row t + 8qq, t + 4 + 8qq][c0, c1]
#define LOADW(qq) _Pragma("unroll") for (int h = 0; h < 2; ++h) { const int r = 8 * (qq) + 4 * h; \
        wv[qq][h][0] = *(const u32*)(st + lw0 + r * 256); wv[qq][h][1] = *(const u32*)(st + lw1 + r * 256); }
#if BITS == 4
#pragma unroll
      for (int qq = 0; qq < QG; ++qq) LOADW(qq)
#endif
      const u32 zw0 = *(const u32*)(st + lz0), zw1 = *(const u32*)(st + lz1);
      const u32 s0 = *(const u16*)(st + ls0), s1 = *(const u16*)(st + ls1);
      u32 mz[2], nzh[2], s2[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const u32 z = ((h ? zw1 : zw0) >> (h ? zsh1 : zsh0)) & ((1u << BITS) - 1u);
#if BF16
        mz[h] = z * 0x10001u + (0x4300u + ZERO_V1) * 0x10001u;
        nzh[h] = 0u;
#else
        mz[h] = z * 0x10001u + (0x6400u + ZERO_V1) * 0x10001u;
        nzh[h] = sub2(0x63806380u, mz[h]);
#endif
        s2[h] = (h ? s1 : s0) * 0x10001u;
      }
      const u32 xb = ring + s * STAGE_BYTES;
#if TOK <= 64
      // the stage's x block in the descriptor's address field (bits 0-13: address / 16, below 0x4000 in any CTA's
      // shared memory); each step adds its offset / 16 without a carry out of the field. Fewer uniform instructions
      // a step (H200, 12th session, M=64, µs, two rounds: qkv 11.9 -> 11.4, o_proj 8.1-8.2 -> 7.9, gate_up 41.9-42.6
      // -> 41.3-42.4, down 22.6 -> 21.5; the layer at 256 rows ran 174 -> 188-190 with it, so not past 64 rows)
      const u64 dbase = dconst | (u64)((xb & 0x3FFFFu) >> 4);
#endif
#pragma unroll
      for (int i = 0; i < 8; ++i) {  // the 16-row step kt: pair jj of word rows t + 8qq (+4)
#if BITS == 8  // a word's two steps back to back (kt = qq, qq + 4): 4 words a lane live, loaded when first used
        const int qq = i >> 1, jj = i & 1, kt = qq + 4 * jj, b = i %% INFL;
        if (jj == 0) LOADW(qq)
#else
        const int kt = i, qq = kt & 1, jj = kt >> 1, b = i %% INFL;
#endif
#if TMA && TOK <= 64
        const u64 desc = dbase + (u64)((((kt >> 2) * (TOK * 128) + (kt & 3) * 32)) >> 4);
#elif TOK <= 64
        const u64 desc = dbase + (u64)((2 * kt * MTT * 128) >> 4);
#elif TMA
        const u64 desc = dconst | (u64)(((xb + (kt >> 2) * (TOK * 128) + (kt & 3) * 32) & 0x3FFFFu) >> 4);
#else
        const u64 desc = dconst | (u64)(((xb + 2 * kt * MTT * 128) & 0x3FFFFu) >> 4);
#endif
#define DQ(J) { a[b][0] = dq<J>(wv[qq][0][0], mz[0], nzh[0], s2[0]); a[b][1] = dq<J>(wv[qq][0][1], mz[1], nzh[1], s2[1]); \
                a[b][2] = dq<J>(wv[qq][1][0], mz[0], nzh[0], s2[0]); a[b][3] = dq<J>(wv[qq][1][1], mz[1], nzh[1], s2[1]); }
#if PROBE == 1  // no dequantization: the words themselves as A
        a[b][0] = wv[qq][0][0]; a[b][1] = wv[qq][0][1]; a[b][2] = wv[qq][1][0]; a[b][3] = wv[qq][1][1];
#else
        if (jj == 0) DQ(0) else if (jj == 1) DQ(1) else if (jj == 2) DQ(2) else DQ(3)
#endif
#undef DQ
        keep(acc);
        wg_fence();
#if PROBE == 3  // no wgmma: keep the dequantized registers alive instead
        asm volatile("" :: "r"(a[b][0]), "r"(a[b][1]), "r"(a[b][2]), "r"(a[b][3]), "l"(desc));
#else
        wgmma(acc, a[b][0], a[b][1], a[b][2], a[b][3], desc);
#endif
        wg_commit();
        keep(acc);
        wg_wait<INFL - 1>();  // step i - INFL + 1 is done: its A registers (set b + 1) may be written
        if (i == INFL - 2 && pend >= 0) {  // the last block's wgmmas are done: its stage is free (MC: in both CTAs)
#if MC
          __syncwarp();
          if (lane == 0) {
            mbar_arrive(bars + 8 * (STAGES + pend));
            mbar_arrive_peer(bars + 8 * (STAGES + pend));
          }
#else
          mbar_arrive(bars + 8 * (STAGES + pend));
#endif
        }
      }
      pend = s;
      if (++s == STAGES) s = 0, ph ^= 1u;
#if SK && PROBE < 6
%(sk_epilogue)s#endif
    }
    wg_wait<0>();
    keep(acc);
#if !SK && PROBE < 6
%(store)s#endif
  }
#if PROBE < 6
%(cluster_sum)s#endif
#if MC
  cluster_sync();  // no CTA leaves while its peer may still arrive on its barriers
#endif
}
"""


def rswg_kernel_source(spec: RswgSpec) -> str:
    """The CUDA C++ text of `fg_gptq_rswg` for `spec` (no headers; compile for sm_90a).

    Example:
        >>> src = rswg_kernel_source(RswgSpec(bf16=False, tok=256, split=1, zero_v1=True))
        >>> "m64n256k16.f32.f16.f16" in src and "setmaxnreg.inc.sync.aligned.u32 232" in src
        True
    """
    prod, cons = spec.regs()
    compiled = spec.compiled_regs()
    dec = f'asm volatile("setmaxnreg.dec.sync.aligned.u32 {prod};" ::: "memory");' if prod < compiled else ""
    inc = f'asm volatile("setmaxnreg.inc.sync.aligned.u32 {cons};" ::: "memory");' if cons > compiled else ""
    return _SOURCE % {
        "bf16": int(spec.bf16),
        "tok": spec.tok,
        "split": spec.split,
        "zero_v1": int(spec.zero_v1),
        "stages": spec.stages,
        "infl": spec.infl,
        "ncw": spec.ncw,
        "minb": spec.minb,
        "stage_bytes": rswg_stage_bytes(spec),
        "meta": META,
        "vred": int(spec.vred),
        "sk": int(spec.sk),
        "tma": int(spec.tma),
        "probe": spec.probe,
        "bits": spec.bits,
        "pdl": spec.pdl,
        "sred": int(spec.sred),
        "mc": int(spec.mc),
        "ostage": int(spec.ostage),
        "sk_epilogue": SK_EPILOGUE,
        "dec": dec,
        "inc": inc,
        "helpers": HELPERS,
        "scaled_dequant": SCALED_DEQUANT,
        "device": ws_device(spec.tok, spec.bf16),
        "store": CONSUMER_STORE,
        "cluster_sum": CLUSTER_SUM,
        "zero_fill": X_ZERO_FILL,
    }
