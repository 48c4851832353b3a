"""CUDA C++ source of the mid-M GPTQ kernel (M = 17..64; `gptq_cuda.py` compiles it with NVRTC), as text.

`fg_gptq_mid_m`: x `[M ≤ 64, K]` (fp16, or bf16 at 4 bits) times W in `fg.gptq.repack`'s layout, with the
small-M kernel's fragments, loads and dequantization (`gptq_cuda_src.py`) but another division of the work:

- A CTA is NWARPS adjacent 64-column strips (warp w takes strip NWARPS·blockIdx.x + w) times one K
  slice (`bps` blocks, blockIdx.y of SPLIT). All its warps walk the same 128-row blocks, so each
  block of x (M rows × 128, 256 B a row) is staged in shared memory once per CTA (cp.async, two
  buffers: block u+1 lands while block u is used; gathered through perm for act-order) and read by
  every warp; rows M..8·MT−1 stay zero.
- A lane keeps one block of words in registers and refills it half a block at a time (bufs = 1),
  or keeps `bufs` blocks and requests block u + bufs − 1 whole before block u's math, or (`cpa`) each block
  (x's rows, the words, scales and zeros) streams through a CPA-stage cp.async ring in shared memory.
- The scale is folded into the dequantized fp16/bf16 pair ((q − z)·s, one packed multiply), so the
  accumulators are the whole sum (no per-block fp32 partials: at MT = 8 they would not fit).
- Per 16-row step kt, the B fragments of the MT n-tiles are read from shared memory once and used
  by the 4 column groups i; each A fragment (4 dequantized pairs) feeds MT mmas.
- Epilogue (`gptq_cuda_mid_parts.py`): the sums go to shared memory ([M][NWARPS·64] fp32), then out (SPLIT = 1),
  or the SPLIT CTAs sum in a thread-block cluster, or the last (atomic ticket) sums a workspace, in order.
"""

from __future__ import annotations

from dataclasses import fields

from fusegraph.runtime.kernels.gptq_cuda_mid_parts import MID_EPILOGUE, MID_GATHER_AHEAD
from fusegraph.runtime.kernels.gptq_cuda_mid_spec import XS, MidSpec, mid_smem_bytes
from fusegraph.runtime.kernels.gptq_cuda_ptx import HELPERS, SCALED_DEQUANT
from fusegraph.runtime.kernels.gptq_cuda_rings import RING_HELPERS

__all__ = ["MID_KERNEL_NAME", "MidSpec", "mid_kernel_source", "mid_smem_bytes"]

MID_KERNEL_NAME = "fg_gptq_mid_m"


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
#define NBUF %(bufs)d
#define PDL %(pdl)d
#define CHAIN %(chain)d
#define CHAIN_L2 %(chain_l2)d
#define L2PF %(l2pf)d
#define CPA %(cpa)d  // 0: words in registers (NBUF); else the stages of a cp.async ring of x's blocks and the words
#define SFOLD %(sfold)d
#define XS %(xs)d
#define MROWS (8 * MT)
#define CW (64 * NWARPS)  // the CTA's output columns
#define XSTAGE (MROWS * XS * 4)            // CPA: x's block in a stage (bytes)
#define WSTAGE (R * 256 + 128 + 8 * BITS)  // CPA: one warp's words (`cpa_words`), scales and zeros of the block
#define STAGE (XSTAGE + NWARPS * WSTAGE)
%(helpers)s%(ring_helpers)s%(scaled_dequant)s
// SFOLD: (q - z) only, each block's fp32 sums are scaled at its end; else the scale folded into the pair
template <int J> __device__ __forceinline__ u32 dq_mid(u32 w, u32 mz, u32 nzh, u32 s2) {
  return SFOLD ? dq_raw<J>(w, mz, nzh) : dq<J>(w, mz, nzh, s2);
}
// x's staging shared address is held too where a thread may use more than 128 registers (at 128 it spills)
#define HOLD_X (65536 / (MIN_BLOCKS * NWARPS * 32) > 128)
extern "C" __global__ void
#if CLUSTER
__cluster_dims__(1, SPLIT, 1)
#endif
__launch_bounds__(NWARPS * 32, MIN_BLOCKS)
fg_gptq_mid_m(const u16* __restrict__ x, const u32x4* __restrict__ qw, const u16* __restrict__ sc,
              const u32* __restrict__ qz, const int* __restrict__ perm, u16* __restrict__ out,
              float* __restrict__ ws, int* __restrict__ cnt, int M, int N, int K, int group_size, int bps,
              int stride_xm, int stride_s, int stride_qz, int stride_om) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int cta = blockIdx.x, ks = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int strip = cta * NWARPS + warp, kb0 = ks * bps;
  u32* xs = (u32*)smem;      // [2][MROWS][XS]: x's block u in buffer u & 1 (CPA: block u in stage u %% CPA)
  float* fin = (float*)smem;  // after the loop: [M][CW] sums
  const u32x4* wsrc = qw + (u64)strip * (K / P) * 16 + t * 16 + g;
  const u16* ssrc = sc + strip * 64 + 4 * g;
#if BITS == 4
  const u32* zsrc = qz + strip * 8 + (g >> 1);
  const int zoff_y = 4, zshift = 16 * (g & 1);
#else
  const u32* zsrc = qz + strip * 16 + g;
  const int zoff_y = 8, zshift = 0;
#endif

  hold(wsrc);  // the lane's words of block 0 (the loop's are a product of the block index from it)

#define GCH ((MROWS * 16 + NWARPS * 32 - 1) / (NWARPS * 32))  // 16-byte chunks of x a thread stages a block
  // The thread's chunks (8 values each) of x's block: rows xr0 + 2·NWARPS·i (i < GCH; those < M), columns 8·xc..
  // (HAS_PERM: their perm entries). xrow: row xr0 (without HAS_PERM its chunk of block 0); xthr: the thread's chunk
  // of row xr0 in a buffer at xs, and xs_thr its shared-window address (held with HOLD_X; holding xrow too spills
  // some 8-bit kernels). Each block's addresses are steps from these.
  const int xr0 = tid >> 4, xc = tid & 15;
  const u16* xrow = x + (u64)xr0 * stride_xm + (HAS_PERM ? 0 : xc * 8);
  u32* const xthr = xs + xr0 * XS + xc * 4;
  u32 xs_thr = smem_u32(xthr);
  if (HOLD_X) hold(xs_thr);
  auto stage = [&](u32* dst, int u, bool async) {  // x's rows of block kb0 + u into dst (in smem)
    const int kbase = (kb0 + u) * 128;
    const u16* xr = HAS_PERM ? xrow : xrow + kbase;  // row m = xr0 + 2·NWARPS·i's chunk (HAS_PERM: row m)
#pragma unroll
    for (int i = 0; i < GCH; ++i, xr += (u64)(2 * NWARPS) * stride_xm) {
      if (xr0 + 2 * NWARPS * i >= M) break;
      const int off = (int)(dst - xs) + 2 * NWARPS * i * XS;  // row m's chunk in dst, from xthr
#if HAS_PERM
      const i32x4 p0 = *(const i32x4*)(perm + kbase + xc * 8), p1 = *(const i32x4*)(perm + kbase + xc * 8 + 4);
      u32x4 v;
      v.x = (u32)xr[p0.x] | ((u32)xr[p0.y] << 16);
      v.y = (u32)xr[p0.z] | ((u32)xr[p0.w] << 16);
      v.z = (u32)xr[p1.x] | ((u32)xr[p1.y] << 16);
      v.w = (u32)xr[p1.z] | ((u32)xr[p1.w] << 16);
      *(u32x4*)(xthr + off) = v;
#else
      if (async)
        cp16(xs_thr + 4 * off, xr);
      else  // CPA after a PDL wait: the first stages' x by plain loads (their words are in earlier groups)
        *(u32x4*)(xthr + off) = *(const u32x4*)xr;
#endif
    }
  };
  auto scale_row = [&](int blk) {  // the strip's 64 scales of block blk's group: one 128-byte row
    return sc + (u64)(group_size == 128 ? blk : blk * 128 / group_size) * stride_s + strip * 64;
  };
#if CPA
  // block u into stage u %% CPA; parts as in the small-M kernel: 1 this lane's words and the warp's zeros (int32),
  // 2 the warp's scales; and 4 x's rows (CTA-wide)
  auto issue = [&](int u, int parts) {
    unsigned char* st = smem + (u %% CPA) * STAGE;
    if (parts & 4) stage((u32*)st, u, true);
    unsigned char* wst = st + XSTAGE + warp * WSTAGE;
    const int blk = kb0 + u, grp = group_size == 128 ? blk : blk * 128 / group_size;
    if (parts & 1) cpa_words(smem_u32(wst), qw + ((u64)strip * (K / P) + (u64)blk * R) * 16, lane);
    if (lane < 8) {  // the strip's 64 scales of the group
      if (parts & 2) cp16ca(smem_u32(wst + R * 256 + lane * 16), scale_row(blk) + lane * 8);
    } else if (lane < 8 + BITS / 2 && (parts & 1))  // its packed zeros (8·BITS bytes)
      cp16ca(smem_u32(wst + R * 256 + 128 + (lane - 8) * 16),
           (const unsigned char*)(qz + (u64)grp * stride_qz) + strip * 8 * BITS + (lane - 8) * 16);
  };
#endif
%(gather_ahead)s  u32x4 wb[NBUF][NW];  // this lane's words of NBUF blocks (rows t + 4q; columns 4g.. and 32 + 4g..)
  u32x2 sx, sy;  // the scales of those columns
  u32 zx, zy;    // their packed zeros
  auto load_words = [&](u32x4* w, int blk, int q) {
    const u32x4* src = wsrc + (u64)blk * R * 16 + q * 64;
    w[2 * q] = ldg_stream(src);
    w[2 * q + 1] = ldg_stream(src + 8);
  };
  // The scales and zeros of the blocks' groups, loaded block after block (kb0, kb0 + 1, ..): sp and zp, those of
  // the next block's group, step a group row whenever the blocks pass group_size rows (gk: the next block's first
  // row from its group's), in place of a division of the block index each block.
  int gk = kb0 * 128 %% group_size;
  const u16* sp = ssrc + (u64)(kb0 * 128 / group_size) * stride_s;
  const u32* zp = zsrc + (u64)(kb0 * 128 / group_size) * stride_qz;
  auto load_meta = [&](bool scales, bool zeros) {  // the next block's (then the pointers step to the one after)
    if (scales) {
      sx = ldg8(sp);
      sy = ldg8(sp + 32);
    }
    if (zeros) {
      zx = ldg4(zp);
      zy = ldg4(zp + zoff_y);
    }
    if (!scales) return;  // the zeros alone come first (PDL: before the wait); the scales step the pointers
    for (gk += 128; gk >= group_size; gk -= group_size) {
      sp += stride_s;
      zp += stride_qz;
    }
    hold(sp);
    hold(zp);
  };

#if CHAIN  // a PDL launch after any kernel: only L2 prefetches (coherent) before the wait, then as without PDL
  if (lane == 0)  // the strip's first CHAIN_L2 blocks of this slice, one bulk request a block
    for (int b = 0; b < CHAIN_L2 && b < bps; ++b) prefetch_l2(qw + ((u64)strip * (K / P) + (u64)(kb0 + b) * R) * 16, R * 256);
  pdl_wait();
  pdl_trigger();  // after the wait: one kernel at most starts ahead of the one that runs
#endif
  // With PDL the first blocks' words and zeros come before the wait: int32 tensors of `fg.gptq.repack`, which no
  // kernel of the chain writes (pdl.py); their scales (a float weight) are only asked of L2 there, and loaded after it.
#if CPA  // the first CPA - 1 blocks in flight (with PDL words and zeros before the wait; x and scales after it)
  for (int b = 0; b < CPA - 1; ++b) {
    if (b < bps) issue(b, PDL ? 1 : 7);
    if (PDL && b < bps && lane == 0) prefetch_l2(scale_row(kb0 + b), 128);
    cp_commit();
  }
  if (PDL) {
    pdl_wait();
    pdl_trigger();  // as in the chain: the next kernel may launch once this one is past its wait
    for (int b = 0; b < CPA - 1 && b < bps; ++b) {
      stage((u32*)(smem + b * STAGE), b, false);
      issue(b, 2);
    }
    cp_commit();  // the newest group: the loop's first wait takes it whole
  }
#elif PERM_AHEAD
  load_perm(0);
  gather(0);
  put(0);
  cp_commit();
#else
  if (!PDL) stage(xs, 0, true);
  cp_commit();
#endif
#if L2PF
  if (lane == 0)  // the strip's first L2PF blocks into L2 (the ones in registers next are asked for anyway)
    for (int b = NBUF > 1 ? NBUF - 1 : 1; b < L2PF && b < bps; ++b)
      prefetch_l2(qw + (u64)strip * (K / P) * 16 + (u64)(kb0 + b) * R * 16, R * 256);
#endif
#if !CPA
#pragma unroll
  for (int b = 0; b < (NBUF > 1 ? NBUF - 1 : 1); ++b)
#pragma unroll
    for (int q = 0; q < NQ; ++q)
      if (b < bps) load_words(wb[b], kb0 + b, q);
  load_meta(!PDL, true);
  if (PDL) {
    if (lane == 0) prefetch_l2(scale_row(kb0), 128);
    pdl_wait();  // x (and perhaps the scales) are written by the kernels before this one
    pdl_trigger();
    load_meta(true, false);
    stage(xs, 0, true);
    cp_commit();
  }
#endif
  // the padding rows of x's buffers (CPA: of each stage in use): zero
  const int nxb = CPA ? (bps < CPA ? bps : CPA) : 2, xb_stride = CPA ? STAGE / 4 : MROWS * XS;
  for (int i = tid; i < nxb * (MROWS - M) * 64; i += NWARPS * 32) {
    const int b = i / ((MROWS - M) * 64), r = i - b * (MROWS - M) * 64;
    xs[b * xb_stride + (M + (r >> 6)) * XS + (r & 63)] = 0u;
  }

  float acc[4][MT][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][mt][c] = 0.f;

  for (int u0 = 0; u0 < bps; u0 += NBUF)
#pragma unroll
  for (int sb = 0; sb < NBUF; ++sb) {
    const int u = u0 + sb;
    if (u >= bps) break;
    u32x4* w = wb[sb];
    const bool more = u + 1 < bps;
#if CPA
    if (PDL && u == 0)  // the first stages' scales are in the newest group (after the wait)
      cp_wait<0>();
    else
      cp_wait<CPA - 2>();
    __syncthreads();  // block u's stage is in; every warp is done with block u - 1's stage: it takes u + CPA - 1
    if (u + CPA - 1 < bps) issue(u + CPA - 1, 7);
    cp_commit();
    const unsigned char* cst = smem + (u %% CPA) * STAGE;
    {
      const unsigned char* wst = cst + XSTAGE + warp * WSTAGE;
      cpa_read(wst, g, t, zoff_y, w, sx, sy, zx, zy);
    }
#else
    cp_wait<0>();
    __syncthreads();  // block u of x is in; every warp is done with buffer (u + 1) & 1
#pragma unroll
    for (int q = 0; q < NQ; ++q)  // NBUF > 1: block u + NBUF - 1 whole, into the buffer block u - 1 left
      if (NBUF > 1 && u + NBUF - 1 < bps) load_words(wb[(sb + NBUF - 1) %% NBUF], kb0 + u + NBUF - 1, q);
    if (more) {
#if PERM_AHEAD
      gather(u + 1);  // stored by put after this block's math
#else
      stage(xs + ((u + 1) & 1) * MROWS * XS, u + 1, true);
      cp_commit();
#endif
    }
#endif
    u32 mz[4][2], nzh[4][2], s2[4][2];  // per column (i, h): magic + z, -(64 + z), the scale twice
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const u32 zw = h ? zy : zx;
#if BITS == 4
        const u32 z = (zw >> (zshift + 4 * i)) & 15u;
#else
        const u32 z = (zw >> (8 * i)) & 255u;
#endif
#if BF16
        mz[i][h] = z * 0x10001u + (0x4300u + ZERO_V1) * 0x10001u;  // 128 + z
        nzh[i][h] = 0u;
#else
        mz[i][h] = z * 0x10001u + (0x6400u + ZERO_V1) * 0x10001u;  // 1024 + z
        nzh[i][h] = sub2(0x63806380u, mz[i][h]);  // 960 - (1024 + z) = -(64 + z)
#endif
        const u32 sw = h ? (i < 2 ? sy.x : sy.y) : (i < 2 ? sx.x : sx.y);
        s2[i][h] = prmt(sw, 0u, (i & 1) ? 0x3232u : 0x1010u);
      }
    if (more && !CPA) load_meta(true, true);
#if SFOLD  // this block's sums of (q - z)·x, scaled once at its end
    float pacc[4][MT][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int c = 0; c < 4; ++c) pacc[i][mt][c] = 0.f;
#define ACC pacc
#else
#define ACC acc
#endif
#if CPA
    const u32* xb = (const u32*)cst + g * XS + t;
#else
    const u32* xb = xs + (u & 1) * MROWS * XS + g * XS + t;
#endif
#pragma unroll
    for (int qq = 0; qq < NQ / 2; ++qq) {  // word rows t + 8qq (a0/a1) and t + 8qq + 4 (a2/a3)
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const int kt = j * (NQ / 2) + qq;  // the 16-row step of x these fragments multiply
        u32 bf[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          bf[mt][0] = xb[mt * 8 * XS + 8 * kt];
          bf[mt][1] = xb[mt * 8 * XS + 8 * kt + 4];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          u32 a0, a1, a2, a3;
#define DQ(J) { a0 = dq_mid<J>(comp(w[4 * qq], i), mz[i][0], nzh[i][0], s2[i][0]); \
                a1 = dq_mid<J>(comp(w[4 * qq + 1], i), mz[i][1], nzh[i][1], s2[i][1]); \
                a2 = dq_mid<J>(comp(w[4 * qq + 2], i), mz[i][0], nzh[i][0], s2[i][0]); \
                a3 = dq_mid<J>(comp(w[4 * qq + 3], i), mz[i][1], nzh[i][1], s2[i][1]); }
          if (j == 0) DQ(0) else if (j == 1) DQ(1) else if (j == 2) DQ(2) else DQ(3)
#undef DQ
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) mma(ACC[i][mt], a0, a1, a2, a3, bf[mt][0], bf[mt][1]);
        }
      }
      if (NBUF == 1 && more && !CPA) {  // this half's words are used: request the next block's
        load_words(w, kb0 + u + 1, 2 * qq);
        load_words(w, kb0 + u + 1, 2 * qq + 1);
      }
    }
#undef ACC
#if SFOLD  // C rows g (c = 0, 1) and g + 8 (c = 2, 3): the columns of scales s2[i][0] and s2[i][1]
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float sf = h2f(s2[i][c >> 1]);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) acc[i][mt][c] = fmaf(sf, pacc[i][mt][c], acc[i][mt][c]);
      }
#endif
#if PERM_AHEAD
    if (more) put(u + 1);  // buffer (u + 1) & 1 is free: every warp passed this iteration's barrier
#endif
  }

%(epilogue)s}
"""


def mid_kernel_source(spec: MidSpec) -> str:
    """The CUDA C++ text of `fg_gptq_mid_m` for `spec` (no headers: NVRTC needs no include path).

    Example:
        >>> src = mid_kernel_source(MidSpec(4, False, 8, 4, 8, True, False, True))
        >>> "#define MT 8" in src and "fg_gptq_mid_m" in src
        True
    """
    values = {f.name: int(getattr(spec, f.name)) for f in fields(spec)}  # every field is an int or a bool
    return _SOURCE % (
        values
        | {
            "xs": XS,
            "helpers": HELPERS,
            "ring_helpers": RING_HELPERS,
            "scaled_dequant": SCALED_DEQUANT,
            "epilogue": MID_EPILOGUE,
            "gather_ahead": MID_GATHER_AHEAD,
        }
    )
