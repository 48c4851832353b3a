"""The CUDA C++ text of `fg_gptq_stream`, the stream-K warp-specialized small-M GPTQ kernel: its design, its
compile-time parameters (`StreamSpec`) and its launch are in `gptq_cuda_stream.py`, which fills the %(...)s
fields (the spec's defines and the device helpers of `gptq_cuda_ptx.py`).
"""

from __future__ import annotations

__all__ = ["STREAM_SOURCE"]

STREAM_SOURCE = r"""
#define BITS %(bits)d
#define BF16 %(bf16)d
#define MT %(mt)d
#define NC %(consumers)d
#define S %(stages)d
#define PAD %(pad)d
#define ZERO_V1 %(zero_v1)d
#define PROBE %(probe)d
#define DIRECT %(direct)d  // no producer: each consumer loads its next unit into registers while it computes this one
#define RING_B (DIRECT ? 0 : S * STAGE_B)
#define CPA %(cpa)d  // 1: the producers copy by cp.async (16 B a lane), 0: by bulk copies (TMA)
#define NP %(producers)d  // producer warps (CPA): warp NC + p takes the units j = p mod NP
#define PDL %(pdl)d  // launched after x's writer with PDL: the first S units' x copied after griddepcontrol.wait
#define MIN_BLOCKS %(min_blocks)d
#define CL %(cl)d                       // 0: partial strips summed by ticket; else in a cluster of CL CTAs
#define FOLD 0
#define STAGE_B %(stage_b)d
#define WP (PAD || CPA ? 288 : 256)   // bytes between word rows in a stage
#define ZB (8 * BITS)                  // one group's packed zeros of 64 columns
#define SOFF (R * WP)                  // scales (128 B), zeros (ZB), x (M rows of 272 B) after the words
#define XOFF (SOFF + 192)
#define XP 68                          // u32 a staged row of x: 64 + 4 (the B fragments hit 32 banks)
%(helpers)s
__device__ __forceinline__ void mbar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%%0];" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void cbar() {  // the consumer warps only (named barrier 1)
  asm volatile("bar.sync 1, %%0;" :: "n"(NC * 32) : "memory");
}
__device__ __forceinline__ long long unit0(int c, long long T, int G) { return (long long)c * T / G; }

extern "C" __global__ void
#if CL
__cluster_dims__(CL, 1, 1)
#endif
__launch_bounds__((NC + (DIRECT ? 0 : NP)) * 32, MIN_BLOCKS)
fg_gptq_stream(const u16* __restrict__ x, const u32* __restrict__ qw, const u16* __restrict__ sc,
               const u32* __restrict__ qz, u16* __restrict__ out, float* __restrict__ ws, int* __restrict__ cnt,
               int M, int N, int K, int group_size, int stride_xm, int stride_s, int stride_qz, int stride_om) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = gridDim.x, c = blockIdx.x;
  const int B = K / 128;                         // blocks a strip
  const long long T = (long long)(N / 64) * B;   // units
#if CL  // cluster q takes strips q·NS/nq .. (q+1)·NS/nq, its CTAs equal runs of their units
  const int NS = N / 64, nq = G / CL, q = c / CL, rk = c %% CL;
  const long long U = (long long)(q * NS / nq) * B, TQ = (long long)((q + 1) * NS / nq - q * NS / nq) * B;
  auto cu0 = [&](int rr) { return U + rr * TQ / CL; };
  const long long u0 = cu0(rk), u1 = cu0(rk + 1);
  int pst[2] = {-1, -1}, pown[2] = {0, 0};  // the run's partial strips (slot 0: its first, 1: its last), owned
#else
  const long long u0 = unit0(c, T, G), u1 = unit0(c + 1, T, G);
#endif
  const int total = M * 64;
  const int nu = (int)(u1 - u0);
  const u32 full = smem_u32(smem + RING_B), empty = full + 8 * S;
  float* red = (float*)(smem + RING_B + 16 * S + 16);  // [NC][M][64]
  float* fin = red + NC * M * 64;                             // CL: [2][M][64], the partial strips' sums
  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%%0], %%1;" :: "r"(full + 8 * s), "r"(CPA ? 32 : 1) : "memory");
      asm volatile("mbarrier.init.shared::cta.b64 [%%0], 1;" :: "r"(empty + 8 * s) : "memory");
    }
    mbar_init_fence();
  }
  __syncthreads();

#if CPA
  if (warp >= NC) {  // producer warp p: units j = p mod NP into stage j %% S, 16 B a lane, once unit j - S is freed
    const int p = warp - NC, first = min(S, nu);  // the first round: with PDL, x after griddepcontrol.wait
    auto copy_x = [&](int j, int blk) {
      const u32 dst = smem_u32(smem + (j %% S) * STAGE_B) + XOFF;
      for (int c = lane; c < M * 16; c += 32)
        cp16(dst + (c >> 4) * XP * 4 + (c & 15) * 16, x + (u64)(c >> 4) * stride_xm + blk * 128 + (c & 15) * 8);
    };
    auto arrive = [&](int j) {  // this lane's copies of unit j (and before) land: one arrival of 32
      asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%%0];" :: "r"(full + 8 * (j %% S)) : "memory");
    };
    for (int j = p; j < nu; j += NP) {
      const int s = j %% S;
      if (j >= S) mbar_wait(empty + 8 * s, ((j / S) - 1) & 1);
      const long long u = u0 + j;
      const int strip = (int)(u / B), blk = (int)(u - (long long)strip * B);
      const int grp = group_size == 128 ? blk : blk * 128 / group_size;
      const u32 dst = smem_u32(smem + s * STAGE_B);
      const unsigned char* wsrc = (const unsigned char*)qw + ((u64)strip * (K / P) + (u64)blk * R) * 256;
#pragma unroll 4
      for (int c = lane; c < R * 16; c += 32) cp16(dst + (c >> 4) * WP + (c & 15) * 16, wsrc + c * 16);
      if (lane < 8)
        cp16(dst + SOFF + lane * 16, sc + (u64)grp * stride_s + strip * 64 + lane * 8);
      else if (lane < 8 + ZB / 16)
        cp16(dst + SOFF + 128 + (lane - 8) * 16,
             (const unsigned char*)(qz + (u64)grp * stride_qz) + strip * ZB + (lane - 8) * 16);
      if (!PDL || j >= S) {
        copy_x(j, blk);
        arrive(j);
      }
      if (PDL && j < S && j + NP >= first) {  // this producer's first round is on its way: x of those units
        pdl_wait();
        for (int jj = p; jj <= j; jj += NP) {
          copy_x(jj, (int)((u0 + jj) %% B));
          arrive(jj);
        }
      }
    }
  } else {
#else
  if (warp == NC) {  // the producer: unit j into stage j %% S once the consumer of unit j - S freed it
    const u32 tx = R * 256 + 128 + ZB + M * 256;
    const int ncopy = (PAD ? R : 1) + 2 + M;
    for (int j = 0; j < nu; ++j) {
      const int s = j %% S;
      if (j >= S) mbar_wait(empty + 8 * s, ((j / S) - 1) & 1);
      const long long u = u0 + j;
      const int strip = (int)(u / B), blk = (int)(u - (long long)strip * B);
      const int grp = group_size == 128 ? blk : blk * 128 / group_size;
      const u32 bar = full + 8 * s, dst = smem_u32(smem + s * STAGE_B);
      if (lane == 0) mbar_expect(bar, tx);  // (no proxy fence here: it kept one unit in flight, run A)
      __syncwarp();
      const unsigned char* wsrc = (const unsigned char*)qw + ((u64)strip * (K / P) + (u64)blk * R) * 256;
      for (int k = lane; k < ncopy; k += 32) {
        const int r = PAD ? R : 1;
        if (k < r)
          bulk_copy(dst + k * WP, wsrc + k * 256, PAD ? 256 : R * 256, bar);
        else if (k == r)
          bulk_copy(dst + SOFF, sc + (u64)grp * stride_s + strip * 64, 128, bar);
        else if (k == r + 1)
          bulk_copy(dst + SOFF + 128, (const unsigned char*)(qz + (u64)grp * stride_qz) + strip * ZB, ZB, bar);
        else if (!PDL || j >= S)
          bulk_copy(dst + XOFF + (k - r - 2) * XP * 4, x + (u64)(k - r - 2) * stride_xm + blk * 128, 256, bar);
      }
      if (PDL && j == min(S, nu) - 1) {  // the first stages' words are on their way: now x of those units
        pdl_wait();
        for (int k = lane; k < (j + 1) * M; k += 32) {
          const int jj = k / M, mm = k - jj * M, bj = (int)((u0 + jj) %% B);
          bulk_copy(smem_u32(smem + jj * STAGE_B) + XOFF + mm * XP * 4, x + (u64)mm * stride_xm + bj * 128, 256,
                    full + 8 * jj);
        }
      }
    }
  } else if (warp < NC) {  // the consumers
#endif
  const int g = lane >> 2, t = lane & 3;
#if BITS == 4
  const int zw = g >> 1, zoff_y = 4, zshift = 16 * (g & 1);
#else
  const int zw = g, zoff_y = 8, zshift = 0;
#endif
  float acc[4][MT][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][mt][e] = 0.f;
  u32 sink = 0u;  // PROBE
  __shared__ int last;
#if DIRECT
  struct Unit {  // one lane's operands of one unit: words, scales, zeros, x's B fragments
    u32x4 w[NW];
    u32x2 sx, sy;
    u32 zx, zy;
    u32 bf[8][MT][2];
  };
  auto fetch = [&](Unit& un, int j) {
    const long long u = u0 + j;
    const int strip = (int)(u / B), blk = (int)(u - (long long)strip * B);
    const int grp = group_size == 128 ? blk : blk * 128 / group_size;
    const u32x4* src = (const u32x4*)qw + ((u64)strip * (K / P) + (u64)blk * R) * 16 + t * 16 + g;
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      un.w[2 * q] = ldg_stream(src + q * 64);
      un.w[2 * q + 1] = ldg_stream(src + q * 64 + 8);
    }
    const u16* sp = sc + (u64)grp * stride_s + strip * 64 + 4 * g;
    un.sx = ldg8(sp);
    un.sy = ldg8(sp + 32);
    const u32* zp = qz + (u64)grp * stride_qz + strip * (ZB / 4) + zw;
    un.zx = ldg4(zp);
    un.zy = ldg4(zp + zoff_y);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int m = g + 8 * mt;
      const u32* xr = (const u32*)(x + (u64)(m < M ? m : 0) * stride_xm) + blk * 64 + t;
#pragma unroll
      for (int kt = 0; kt < 8; ++kt) {
        un.bf[kt][mt][0] = m < M ? ldg4(xr + 8 * kt) : 0u;
        un.bf[kt][mt][1] = m < M ? ldg4(xr + 8 * kt + 4) : 0u;
      }
    }
  };
  Unit nx;  // this warp's next unit, in flight
  if (warp < nu) fetch(nx, warp);
#endif
  int j0 = 0;
  while (j0 < nu) {  // one strip of the run a round: units j0 .. j1 - 1
    const long long ua = u0 + j0;
    const int strip = (int)(ua / B);
    const int j1 = (int)(min(u1, (long long)(strip + 1) * B) - u0);
    for (int j = j0 + ((warp - j0 %% NC) + NC) %% NC; j < j1; j += NC) {
#if DIRECT
      const Unit cu = nx;
      if (j + NC < nu) fetch(nx, j + NC);
#if PROBE
      sink ^= cu.w[0].x ^ cu.w[NW - 1].w ^ cu.bf[7][MT - 1][1] ^ cu.zx;
#else
      const u32x4* w = cu.w;
      const u32x2 sx = cu.sx, sy = cu.sy;
      const u32 zx = cu.zx, zy = cu.zy;
      const u32(*bf)[MT][2] = cu.bf;
#endif
#else
      const int s = j %% S;
      const unsigned char* st = smem + s * STAGE_B;
      mbar_wait(full + 8 * s, (j / S) & 1);
#if PROBE
      sink ^= *(const u32*)(st + lane * 16) ^ *(const u32*)(st + XOFF + lane * 4);
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + 8 * s);
#else
      u32x4 w[NW];
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        w[2 * q] = *(const u32x4*)(st + (t + 4 * q) * WP + g * 16);
        w[2 * q + 1] = *(const u32x4*)(st + (t + 4 * q) * WP + 128 + g * 16);
      }
      const u32x2 sx = *(const u32x2*)(st + SOFF + g * 8), sy = *(const u32x2*)(st + SOFF + 64 + g * 8);
      const u32 zx = *(const u32*)(st + SOFF + 128 + zw * 4), zy = *(const u32*)(st + SOFF + 128 + (zw + zoff_y) * 4);
      u32 bf[8][MT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int m = g + 8 * mt;
        const u32* xr = (const u32*)(st + XOFF) + m * XP + t;
#pragma unroll
        for (int kt = 0; kt < 8; ++kt) {
          bf[kt][mt][0] = m < M ? xr[8 * kt] : 0u;
          bf[kt][mt][1] = m < M ? xr[8 * kt + 4] : 0u;
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + 8 * s);  // the stage's data is in registers
#endif  // PROBE
#endif  // DIRECT
#if !PROBE
      u32 mz[4][2], nzh[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const u32 zq = h ? zy : zx;
#if BITS == 4
          const u32 z = (zq >> (zshift + 4 * i)) & 15u;
#else
          const u32 z = (zq >> (8 * i)) & 255u;
#endif
#if BF16
          mz[i][h] = z * 0x10001u + (0x4300u + ZERO_V1) * 0x10001u;  // 128 + z
          nzh[i][h] = 0u;
#else
          mz[i][h] = z * 0x10001u + (0x6400u + ZERO_V1) * 0x10001u;  // 1024 + z
          nzh[i][h] = sub2(0x63806380u, mz[i][h]);  // -(64 + z)
#endif
        }
      float cb[4][MT][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) cb[i][mt][e] = 0.f;
#pragma unroll
      for (int qq = 0; qq < NQ / 2; ++qq) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          u32 d0[NJ], d1[NJ], d2[NJ], d3[NJ];
          dequant(comp(w[4 * qq], i), mz[i][0], nzh[i][0], d0);
          dequant(comp(w[4 * qq + 1], i), mz[i][1], nzh[i][1], d1);
          dequant(comp(w[4 * qq + 2], i), mz[i][0], nzh[i][0], d2);
          dequant(comp(w[4 * qq + 3], i), mz[i][1], nzh[i][1], d3);
#pragma unroll
          for (int jj = 0; jj < NJ; ++jj)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
              mma(cb[i][mt], d0[jj], d1[jj], d2[jj], d3[jj], bf[jj * (NQ / 2) + qq][mt][0], bf[jj * (NQ / 2) + qq][mt][1]);
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const u32 sxi = i < 2 ? sx.x : sx.y, syi = i < 2 ? sy.x : sy.y;
        const float scx = h2f((i & 1) ? (sxi >> 16) : (sxi & 0xffffu));
        const float scy = h2f((i & 1) ? (syi >> 16) : (syi & 0xffffu));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          acc[i][mt][0] += cb[i][mt][0] * scx;
          acc[i][mt][1] += cb[i][mt][1] * scx;
          acc[i][mt][2] += cb[i][mt][2] * scy;
          acc[i][mt][3] += cb[i][mt][3] * scy;
        }
      }
#endif
    }
    // the strip's end: the warps' sums into red, then summed; stored whole, or to this CTA's slot + ticket
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int m = 8 * mt + 2 * t + (e & 1);
          const int col = (e >> 1) * 32 + 4 * g + i;
#if PROBE
          if (m < M) red[(warp * M + m) * 64 + col] = acc[i][mt][e] + (sink == 0x9e3779b9u ? 1.f : 0.f);
#else
          if (m < M) red[(warp * M + m) * 64 + col] = acc[i][mt][e];
#endif
          acc[i][mt][e] = 0.f;
        }
    cbar();
    const bool whole = ua == (long long)strip * B && j1 - j0 == B;
    const int slot = j0 == 0 ? 0 : 1;  // a partial strip is the run's first or its last
#if CL
    float* mine = fin + slot * total;
    if (!whole) {
      pst[slot] = strip;
      pown[slot] = ua == (long long)strip * B;  // the run holds the strip's first unit: it sums the strip
    }
#else
    float* mine = ws + ((u64)c * 2 + slot) * total;
#endif
    for (int i = tid; i < total; i += NC * 32) {
      float v = 0.f;
#pragma unroll
      for (int w2 = 0; w2 < NC; ++w2) v += red[w2 * total + i];
      if (whole)
        out[(u64)(i >> 6) * stride_om + strip * 64 + (i & 63)] = f2h(v);
      else
        mine[i] = v;
    }
    if (!CL && !whole) {
      __threadfence();
      cbar();
      if (tid == 0) last = atomicAdd(cnt + strip, j1 - j0) + (j1 - j0) == B;
      cbar();
      if (last) {  // sum the slots of the strip's CTAs, in CTA order
        __threadfence();
        const long long sa = (long long)strip * B, sb = sa + B;
        int cf = (int)(sa * G / T);
        while (cf + 1 < G && unit0(cf + 1, T, G) <= sa) ++cf;
        while (cf > 0 && unit0(cf, T, G) > sa) --cf;
        for (int i = tid; i < total; i += NC * 32) {
          float v = 0.f;
          for (int cc = cf; cc < G && unit0(cc, T, G) < sb; ++cc) {
            const int sl = unit0(cc, T, G) >= sa ? 0 : 1;  // the strip is cc's first, or its last
            float p;
            asm volatile("ld.global.cg.f32 %%0, [%%1];" : "=f"(p) : "l"(ws + ((u64)cc * 2 + sl) * total + i));
            v += p;
          }
          out[(u64)(i >> 6) * stride_om + strip * 64 + (i & 63)] = f2h(v);
        }
        if (tid == 0) cnt[strip] = 0;  // ready for the next launch
      }
    }
    cbar();  // red is free again
    j0 = j1;
  }
  }
#if CL  // every CTA's partial sums are in; each strip's owner sums its CTAs' slots in rank order
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  if (warp < NC)
    for (int sl = 0; sl < 2; ++sl) {
      if (pst[sl] < 0 || !pown[sl]) continue;
      const long long sa = (long long)pst[sl] * B, sb = sa + B;
      for (int i = tid; i < total; i += NC * 32) {
        float v = 0.f;
        for (int rr = rk; rr < CL && cu0(rr) < sb; ++rr) {
          const u32 local = smem_u32(fin + (cu0(rr) >= sa ? 0 : 1) * total + i);
          u32 remote;
          float p;
          asm volatile("mapa.shared::cluster.u32 %%0, %%1, %%2;" : "=r"(remote) : "r"(local), "r"(rr));
          asm volatile("ld.shared::cluster.f32 %%0, [%%1];" : "=f"(p) : "r"(remote) : "memory");
          v += p;
        }
        out[(u64)(i >> 6) * stride_om + pst[sl] * 64 + (i & 63)] = f2h(v);
      }
    }
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
"""
