"""CUDA C++ source of the small-M GPTQ kernel (`gptq_cuda.py` compiles it with NVRTC), as text.

One kernel, `fg_gptq_small_m`, for x `[M ≤ 16, K]` (fp16, or bf16 at 4 bits) times W stored in the
tiled layout of `fg.gptq.repack` (`gptq_tiled.py`'s docstring): qweight_t int32 `[N/64, K/P, 64]`,
in 128-row block b word row r holds in slot i = e·P/2 + j the value of row 128·b + 2(j·R + r) + e.

- A CTA is one 64-column strip times one K slice (`bps` blocks, blockIdx.y of SPLIT); its warps take the
  slice's blocks in turn; each lane loads its 16-byte words into registers (`ld.global.nc.L1::no_allocate.v4`),
  NBUF buffers deep (the `tma` option, a bulk-copy ring, is correct but measured slower: off), or (`cpa`) through
  the warp's own cp.async ring in shared memory, CPA − 1 blocks ahead (`cpa_words` / `cpa_read`).
- `mma.m16n8k16` with W^T as A (16 columns × 16 rows) and x^T as B: lane (g, t) loads word rows t + 4q of
  columns 4g..4g+3 and 32+4g..+3, exactly its A fragments. M ≤ 8 takes one n-tile, M ≤ 16 two (MT).
- Magic-number dequantization in registers (fp16 4-bit: `lop3(w, 0x000f000f, 0x6400)` − (1024 + z), and
  `lop3(w, 0x00f000f0, 0x6400)`·1/16 − (64 + z); bf16 magic 128; 8-bit `prmt`), or with FOLD the raw pairs and
  the bias taken off each block's fp32 sums; the scale multiplies each block's fp32 sums (one group a block).
- x's slice is staged once per CTA in shared memory (cp.async; gathered through perm for act-order),
  padded so that the B-fragment loads hit 32 distinct banks.
- Split-K: each CTA sums its warps in shared memory, then the last CTA of a strip (atomic ticket) sums the
  SPLIT fp32 slices of a workspace, or (CLUSTER) the strip's CTAs sum through distributed shared memory.
Helpers and the split-K epilogue: `gptq_cuda_ptx.py`. With PDL (spec `pdl`) the first blocks' words and zeros
stream before the wait, their scales and x after it.
"""

from __future__ import annotations

from fusegraph.runtime.kernels.gptq_cuda_ptx import EPILOGUE, FOLD_SUMS, HELPERS
from fusegraph.runtime.kernels.gptq_cuda_rings import RING_HELPERS, TMA_ISSUE, TMA_LOOP
from fusegraph.runtime.kernels.gptq_cuda_small_spec import KernelSpec, smem_bytes

__all__ = ["KernelSpec", "kernel_source", "smem_bytes", "KERNEL_NAME"]

KERNEL_NAME = "fg_gptq_small_m"


_SOURCE = r"""
#define BITS %(bits)d
#define BF16 %(bf16)d
#define MT %(mt)d
#define NWARPS %(warps)d
#define SPLIT %(split)d
#define CLUSTER %(cluster)d
#define HAS_PERM %(has_perm)d
#define ZERO_V1 %(zero_v1)d
#define MIN_BLOCKS %(min_blocks)d
#define PERM_AHEAD %(perm_ahead)d
#define L2PF %(l2pf)d
#define TMA %(tma)d  // 0: registers; else the stages of each warp's bulk-copy ring
#define NBUF %(bufs)d  // register buffers of words a warp (TMA: 2, only the first used)
#define PDL %(pdl)d
#define CHAIN %(chain)d
#define CHAIN_L2 %(chain_l2)d
#define XFULL %(xfull)d
#define FOLD %(fold)d
#define CPA %(cpa)d  // 0: words in registers (NBUF); else the stages of each warp's cp.async ring
#define WSTAGE (R * 256 + 128 + ZB)  // CPA: a warp's words (`cpa_words`), scales and zeros of one block
#define ROWB 288     // a 256-byte word row + 32 bytes of padding in the ring: conflict-free reads
#define ZB (8 * BITS)  // bytes of one group's packed zeros for 64 columns
#define STAGE_B (R * ROWB + 128 + ZB)
%(helpers)s%(ring_helpers)s
struct Blk {  // one lane's operands of one 128-row block
  u32x4 w[NW];   // word rows t + 4q, columns 4g..4g+3 (w[2q]) and 32+4g.. (w[2q+1])
  u32x2 sx, sy;  // the scales of those columns
  u32 zx, zy;    // their packed zeros
};

extern "C" __global__ void
#if CLUSTER
__cluster_dims__(1, SPLIT, 1)
#endif
__launch_bounds__(NWARPS * 32, MIN_BLOCKS)
fg_gptq_small_m(const u16* __restrict__ x, const u32x4* __restrict__ qw, const u16* __restrict__ sc,
                const u32* __restrict__ qz, const int* __restrict__ perm, u16* __restrict__ out,
                float* __restrict__ ws, int* __restrict__ cnt, int M, int N, int K, int group_size, int bps,
                int stride_xm, int stride_s, int stride_qz, int stride_om) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int strip = blockIdx.x, ks = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int kb0 = ks * bps;          // the CTA's first block
  const int xstride = bps * 64 + 4;  // u32 words a row of x's slice (+4: the B-fragment loads hit 32 banks)
  float* red = (float*)smem;         // [NWARPS][M][64] partial sums
  u32* xs = (u32*)(red + NWARPS * M * 64);
  float* fin = (float*)(xs + M * xstride);
#if CPA
  const int nbw_max = (bps + NWARPS - 1) / NWARPS, nslot = nbw_max < CPA ? nbw_max : CPA;
  unsigned char* cring = (unsigned char*)(fin + M * 64) + warp * nslot * WSTAGE;  // this warp's stages
#endif
#if TMA
  unsigned char* ring = (unsigned char*)(fin + M * 64) + warp * TMA * STAGE_B;  // this warp's stages
  const u32 bars = smem_u32((unsigned char*)(fin + M * 64) + NWARPS * TMA * STAGE_B) + warp * TMA * 8;
#endif

  const u32x4* wsrc = qw + (u64)strip * (K / P) * 16 + t * 16 + g;
#if BITS == 4
  const u32* zsrc = qz + strip * 8 + (g >> 1);
  const int zoff_y = 4, zshift = 16 * (g & 1);
#else
  const u32* zsrc = qz + strip * 16 + g;
  const int zoff_y = 8, zshift = 0;
#endif
  const int nbw = warp < bps ? (bps - warp + NWARPS - 1) / NWARPS : 0;  // this warp's blocks: warp + NWARPS u

  auto scale_row = [&](int u) {  // the scales of block u's group: 64 columns, one 128-byte row
    const int blk = kb0 + warp + NWARPS * u;
    return sc + (u64)(group_size == 128 ? blk : blk * 128 / group_size) * stride_s + strip * 64;
  };
  auto load_scales = [&](Blk& b, int u) {
    const u16* sp = scale_row(u) + 4 * g;
    b.sx = ldg8(sp);
    b.sy = ldg8(sp + 32);
  };
  auto load = [&](Blk& b, int u, bool with_scales) {  // with_scales false: words and zeros only (int32)
    const int blk = kb0 + warp + NWARPS * u;
#if L2PF
    if (lane == 0 && u + L2PF < nbw)  // the block L2PF ahead of this one: one bulk L2 request of its words
      prefetch_l2(qw + (u64)strip * (K / P) * 16 + (u64)(blk + NWARPS * L2PF) * R * 16, R * 256);
#endif
    const u32x4* src = wsrc + (u64)blk * R * 16;
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      b.w[2 * q] = ldg_stream(src + q * 64);
      b.w[2 * q + 1] = ldg_stream(src + q * 64 + 8);
    }
    const int grp = group_size == 128 ? blk : blk * 128 / group_size;
    if (with_scales) load_scales(b, u);
    const u32* zp = zsrc + (u64)grp * stride_qz;
    b.zx = ldg4(zp);
    b.zy = ldg4(zp + zoff_y);
  };

#if CPA
  // block u of this warp into stage u %% CPA: its words (`cpa_words`), scales and zeros (lanes 0..9)
  // parts: 1 the words and zeros (int32), 2 the scales, 3 both
  auto issue = [&](int u, int parts) {
    const int blk = kb0 + warp + NWARPS * u, grp = group_size == 128 ? blk : blk * 128 / group_size;
    unsigned char* st = cring + (u %% CPA) * WSTAGE;
    if (parts & 1) cpa_words(smem_u32(st), qw + ((u64)strip * (K / P) + (u64)blk * R) * 16, lane);
    if (lane < 8) {
      if (parts & 2) cp16ca(smem_u32(st + R * 256 + lane * 16), scale_row(u) + lane * 8);
    } else if (lane < 8 + BITS / 2 && (parts & 1))
      cp16ca(smem_u32(st + R * 256 + 128 + (lane - 8) * 16),
           (const unsigned char*)(qz + (u64)grp * stride_qz) + strip * ZB + (lane - 8) * 16);
  };
#endif
#if CHAIN  // a PDL launch after any kernel: only L2 prefetches (coherent) before the wait, then as without PDL
  if (lane == 0)  // the warp's first CHAIN_L2 blocks, one bulk request a block
    for (int u = 0; u < CHAIN_L2 && u < nbw; ++u)
      prefetch_l2(qw + ((u64)strip * (K / P) + (u64)(kb0 + warp + NWARPS * u) * R) * 16, R * 256);
  pdl_wait();
  pdl_trigger();  // after the wait: one kernel at most starts ahead of the one that runs
#endif
%(tma_issue)s#if L2PF
  if (lane == 0)  // blocks 1..L2PF of this warp; load(u) asks for block u + L2PF
    for (int u = 1; u <= L2PF && u < nbw; ++u)
      prefetch_l2(qw + (u64)strip * (K / P) * 16 + (u64)(kb0 + warp + NWARPS * u) * R * 16, R * 256);
#endif
  // x's slice to shared memory (16-byte chunks of 8 values), while the first block's words stream in
  const int row_chunks = bps * 16, chunks = M * row_chunks;
  // The first NBUF - 1 blocks' words in flight while x is staged. With PDL their words and zeros come before the
  // wait: int32 tensors of `fg.gptq.repack`, which no kernel of the chain writes (pdl.py); their scales (a float
  // weight) are only asked of L2 there (coherent), and loaded after it.
  Blk bb[NBUF];
#pragma unroll
  for (int s = 0; s < NBUF - 1; ++s)
    if (s < nbw && !TMA && !CPA) {
      load(bb[s], s, !PDL);
      if (PDL && lane == 0) prefetch_l2(scale_row(s), 128);
    }
#if CPA  // the first CPA - 1 blocks (with PDL their words and zeros before the wait), x after them by plain loads
  for (int s = 0; s < CPA - 1; ++s) {
    if (s < nbw) issue(s, PDL ? 1 : 3);
    if (PDL && s < nbw && lane == 0) prefetch_l2(scale_row(s), 128);
    cp_commit();
  }
#endif
  if (PDL) {  // x is written by the kernel before this one; then the next kernel may launch (as in the chain)
    pdl_wait();
    pdl_trigger();
#pragma unroll
    for (int s = 0; s < NBUF - 1; ++s)  // the first blocks' scales
      if (s < nbw && !CPA) load_scales(bb[s], s);
#if CPA
    for (int s = 0; s < CPA - 1 && s < nbw; ++s) issue(s, 2);
    cp_commit();
#endif
  }
#if HAS_PERM
  u16* xf = (u16*)(fin + M * 64);      // XFULL: x's rows [M][K] and the slice's perm [bps·128] in shared memory
  int* ps = (int*)(xf + (u64)M * K);
  if (XFULL) {
    for (int c = tid; c < M * (K / 8); c += NWARPS * 32)
      cp16(smem_u32(xf + (u64)c * 8), x + (u64)(c / (K / 8)) * stride_xm + (c %% (K / 8)) * 8);
    for (int c = tid; c < bps * 32; c += NWARPS * 32) cp16(smem_u32(ps + c * 4), perm + kb0 * 128 + c * 4);
    cp_commit();
    cp_wait<0>();
    __syncthreads();
  }
#if PERM_AHEAD
  gather_x<8 * MT>(x, perm + kb0 * 128, xs, M, row_chunks, stride_xm, xstride, tid, NWARPS * 32);
#else
  const u16* xg = XFULL ? xf : x;  // where the gather reads x and perm
  const int* pg = XFULL ? ps : perm + kb0 * 128;
  const int xg_stride = XFULL ? K : stride_xm;
#pragma unroll 2
  for (int c = tid; c < chunks; c += NWARPS * 32) {
    const int m = c / row_chunks, cc = c - m * row_chunks;
    const i32x4 p0 = *(const i32x4*)(pg + cc * 8), p1 = *(const i32x4*)(pg + cc * 8 + 4);
    const u16* xr = xg + (u64)m * xg_stride;
    u32x4 v;
    v.x = (u32)xr[p0.x] | ((u32)xr[p0.y] << 16);
    v.y = (u32)xr[p0.z] | ((u32)xr[p0.w] << 16);
    v.z = (u32)xr[p1.x] | ((u32)xr[p1.y] << 16);
    v.w = (u32)xr[p1.z] | ((u32)xr[p1.w] << 16);
    *(u32x4*)(xs + m * xstride + cc * 4) = v;
  }
#endif
#else
  for (int c = tid; c < chunks; c += NWARPS * 32) {
    const int m = c / row_chunks, cc = c - m * row_chunks;
    const u16* src = x + (u64)m * stride_xm + kb0 * 128 + cc * 8;
    if (CPA)  // the words' groups stay in flight
      *(u32x4*)(xs + m * xstride + cc * 4) = *(const u32x4*)src;
    else
      cp16ca(smem_u32(xs + m * xstride + cc * 4), src);
  }
  if (!CPA) {
    cp_commit();
    cp_wait<0>();
  }
#endif
  __syncthreads();
%(fold_sums)s
  float acc[4][MT][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][mt][c] = 0.f;

  auto compute = [&](const Blk& bk, int u) {
    const int lb = warp + NWARPS * u;  // block within the slice
    u32 bf[8][MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int m = g + 8 * mt;
      const u32* xr = xs + m * xstride + lb * 64 + t;
#pragma unroll
      for (int kt = 0; kt < 8; ++kt) {
        bf[kt][mt][0] = m < M ? xr[8 * kt] : 0u;
        bf[kt][mt][1] = m < M ? xr[8 * kt + 4] : 0u;
        if (FOLD && BITS == 4 && ((kt / (NQ / 2)) & 1))  // x/16 for the ×16 pairs (fma with -0: exact)
          for (int h = 0; h < 2; ++h) bf[kt][mt][h] = fma2(bf[kt][mt][h], 0x2c002c00u, 0x80008000u);
      }
    }
    u32 mz[4][2], nzh[4][2];  // per column (i, h): packed magic + z, and -(64 + z) for the x16 pairs
    float zf[4][2];           // FOLD: z
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const u32 zw = h ? bk.zy : bk.zx;
#if BITS == 4
        const u32 z = (zw >> (zshift + 4 * i)) & 15u;
#else
        const u32 z = (zw >> (8 * i)) & 255u;
#endif
        zf[i][h] = (float)(z + ZERO_V1);
#if BF16
        mz[i][h] = z * 0x10001u + (0x4300u + ZERO_V1) * 0x10001u;  // 128 + z
        nzh[i][h] = 0u;
#else
        mz[i][h] = z * 0x10001u + (0x6400u + ZERO_V1) * 0x10001u;  // 1024 + z
        nzh[i][h] = sub2(0x63806380u, mz[i][h]);  // 960 - (1024 + z) = -(64 + z)
#endif
      }
    float cb[4][MT][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int c = 0; c < 4; ++c) cb[i][mt][c] = 0.f;
#pragma unroll
    for (int qq = 0; qq < NQ / 2; ++qq) {  // word rows t + 8qq (a0/a1) and t + 8qq + 4 (a2/a3)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        u32 d0[NJ], d1[NJ], d2[NJ], d3[NJ];
        dequant(comp(bk.w[4 * qq], i), mz[i][0], nzh[i][0], d0);
        dequant(comp(bk.w[4 * qq + 1], i), mz[i][1], nzh[i][1], d1);
        dequant(comp(bk.w[4 * qq + 2], i), mz[i][0], nzh[i][0], d2);
        dequant(comp(bk.w[4 * qq + 3], i), mz[i][1], nzh[i][1], d3);
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
            mma(cb[i][mt], d0[j], d1[j], d2[j], d3[j], bf[j * (NQ / 2) + qq][mt][0], bf[j * (NQ / 2) + qq][mt][1]);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 sx = i < 2 ? bk.sx.x : bk.sx.y, sy = i < 2 ? bk.sy.x : bk.sy.y;
      const float scx = h2f((i & 1) ? (sx >> 16) : (sx & 0xffffu));
      const float scy = h2f((i & 1) ? (sy >> 16) : (sy & 0xffffu));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#if FOLD  // the raw pairs' bias of this block: (1024·Σx_lo + 64·Σx_hi) + z·Σx of the lane's rows 2t, 2t + 1
        const f32x2 r0 = ((f32x2*)red)[min(8 * mt + 2 * t, M - 1) * bps + lb];
        const f32x2 r1 = ((f32x2*)red)[min(8 * mt + 2 * t + 1, M - 1) * bps + lb];
        cb[i][mt][0] -= r0.x + zf[i][0] * r0.y;
        cb[i][mt][1] -= r1.x + zf[i][0] * r1.y;
        cb[i][mt][2] -= r0.x + zf[i][1] * r0.y;
        cb[i][mt][3] -= r1.x + zf[i][1] * r1.y;
#endif
        acc[i][mt][0] += cb[i][mt][0] * scx;
        acc[i][mt][1] += cb[i][mt][1] * scx;
        acc[i][mt][2] += cb[i][mt][2] * scy;
        acc[i][mt][3] += cb[i][mt][3] * scy;
      }
    }
  };

%(tma_loop)s#elif CPA
  Blk& a = bb[0];
  for (int u = 0; u < nbw; ++u) {  // block u's stage is in; stage (u - 1) %% CPA takes block u + CPA - 1
    if (PDL && u == 0)  // the first stages' scales are in the newest group (after the wait)
      cp_wait<0>();
    else
      cp_wait<CPA - 2>();
    __syncwarp();  // every lane's copies are seen by all; all lanes are done with stage (u - 1) %% CPA
    const unsigned char* st = cring + (u %% CPA) * WSTAGE;
    cpa_read(st, g, t, zoff_y, a.w, a.sx, a.sy, a.zx, a.zy);
    if (u + CPA - 1 < nbw) issue(u + CPA - 1, 3);
    cp_commit();
    compute(a, u);
  }
#else
  // NBUF register buffers: the next NBUF - 1 blocks' words are in flight while this one's are used
  for (int u = 0; u < nbw; u += NBUF) {
#pragma unroll
    for (int s = 0; s < NBUF; ++s)
      if (u + s < nbw) {
        if (u + s + NBUF - 1 < nbw) load(bb[(s + NBUF - 1) %% NBUF], u + s + NBUF - 1, true);
        compute(bb[s], u + s);
      }
  }
#endif

  if (FOLD) __syncthreads();  // every warp is done with xsum (in red)
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = 8 * mt + 2 * t + (c & 1);
        const int col = (c >> 1) * 32 + 4 * g + i;
        if (m < M) red[(warp * M + m) * 64 + col] = acc[i][mt][c];
      }
  __syncthreads();
%(epilogue)s"""


def kernel_source(spec: KernelSpec) -> str:
    """The CUDA C++ text of `fg_gptq_small_m` for `spec` (no headers: NVRTC needs no include path).

    Example:
        >>> src = kernel_source(KernelSpec(4, False, 1, 4, 4, False, False, True))
        >>> "fg_gptq_small_m" in src
        True
    """
    return _SOURCE % {
        "bits": spec.bits,
        "bf16": int(spec.bf16),
        "mt": spec.mt,
        "warps": spec.warps,
        "helpers": HELPERS,
        "ring_helpers": RING_HELPERS,
        "split": spec.split,
        "cluster": int(spec.cluster),
        "has_perm": int(spec.has_perm),
        "zero_v1": int(spec.zero_v1),
        "min_blocks": spec.min_blocks,
        "l2pf": spec.l2pf,
        "tma": spec.tma,
        "perm_ahead": int(spec.perm_ahead),
        "bufs": spec.bufs,
        "pdl": int(spec.pdl),
        "chain": int(spec.chain),
        "chain_l2": spec.chain_l2,
        "xfull": int(spec.xfull),
        "fold": int(spec.fold),
        "cpa": spec.cpa,
        "fold_sums": FOLD_SUMS,
        "tma_issue": TMA_ISSUE,
        "tma_loop": TMA_LOOP,
        "epilogue": EPILOGUE,
    }
