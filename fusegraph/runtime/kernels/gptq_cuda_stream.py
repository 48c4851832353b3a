"""CUDA C++ source of the warp-specialized stream-K small-M GPTQ kernel (`gptq_cuda.py` compiles it with NVRTC).

`fg_gptq_stream`: x `[M ≤ 16, K]` (fp16, or bf16 at 4 bits) times W in `fg.gptq.repack`'s layout
(`gptq_tiled.py`'s docstring: a 64-column strip's 128-row block is one contiguous run of R word rows of
256 bytes). A persistent grid of CTAS CTAs (a few an SM) splits the (strip, block) units, strip-major,
into equal runs (CTA c takes units ⌊c·T/CTAS⌋ .. ⌊(c+1)·T/CTAS⌋): every SM streams the same bytes.

- One producer warp streams each unit (its R word rows, its group's 64 scales and packed zeros, and
  x's M rows of that block) into an S-stage shared-memory ring by bulk copies (TMA, mbarrier
  complete_tx): the word rows padded to 288 bytes (one copy each, PAD) or as one copy (no padding).
- NC consumer warps take the units in turn (unit j: warp j mod NC): wait for its stage, read the words,
  scales, zeros and x fragments into registers, free the stage at once, then dequantize (magic numbers,
  `gptq_cuda_ptx.dequant`) and multiply with `mma.m16n8k16` (W^T as A, x^T as B; the small-M kernel's
  fragments), each block's fp32 sums times its scales into the accumulators.
- A run covers whole strips and at most two partial ones. At the end of each strip of its run the
  consumers sum their warps in shared memory; a whole strip is stored; a partial one goes to the CTA's
  slot of a workspace, and the CTA that completes the strip's units (atomic ticket) sums the slots of
  the strip's CTAs in CTA order (deterministic) and stores it. Or (CL) clusters of CL CTAs take whole
  strips each, and after one cluster barrier the CTA holding a partial strip's first unit sums the
  cluster's slots of it in rank order through distributed shared memory.
PROBE = 1 times the ring alone (the consumers read one word of each stage; the result is wrong by design).
"""

from __future__ import annotations

from dataclasses import dataclass

from fusegraph.runtime.kernels.gptq_cuda_ptx import HELPERS

__all__ = ["STREAM_KERNEL_NAME", "StreamSpec", "stream_grid", "stream_kernel_source", "stream_smem_bytes"]

STREAM_KERNEL_NAME = "fg_gptq_stream"


@dataclass(frozen=True)
class StreamSpec:
    """The compile-time parameters of one stream-K kernel instance.

    Attributes:
        bits: container bits, 4 or 8.
        bf16: x, scales and output are bf16 (4 bits only), else fp16.
        mt: n-tiles of 8 rows of x: 1 (M ≤ 8) or 2 (M ≤ 16).
        consumers: consumer warps a CTA (1..12); one more warp produces.
        stages: the ring's stages (2..16), one unit each.
        pad: the word rows land 288 bytes apart (one bulk copy each: conflict-free reads), else as one copy.
        zero_v1: the qzeros store z − 1.
        probe: 1: the ring alone (timing only).
        min_blocks: `__launch_bounds__`'s minimum CTAs an SM (caps the registers).
        cl: 0: the grid splits all units and partial strips are summed by atomic ticket through global
            memory; 2, 4 or 8: clusters of `cl` CTAs each take whole strips (the launch gives every cluster
            the same number where it can) and sum their partial strips through distributed shared memory.
    """

    bits: int
    bf16: bool
    mt: int
    consumers: int
    stages: int
    pad: bool = True
    zero_v1: bool = True
    probe: int = 0
    min_blocks: int = 1
    cl: int = 0

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"gptq_cuda_stream: bits must be 4 or 8, got {self.bits}")
        if self.bf16 and self.bits == 8:
            raise ValueError("gptq_cuda_stream: bf16 needs bits=4 (bf16 cannot hold 128 + 255 exactly)")
        if self.mt not in (1, 2):
            raise ValueError(f"gptq_cuda_stream: mt must be 1 or 2, got {self.mt}")
        if not 1 <= self.consumers <= 12 or not 2 <= self.stages <= 16:
            raise ValueError(
                f"gptq_cuda_stream: consumers must be 1..12 and stages 2..16, got {self.consumers}, {self.stages}"
            )
        if self.cl not in (0, 2, 4, 8):
            raise ValueError(f"gptq_cuda_stream: cl must be 0, 2, 4 or 8, got {self.cl}")
        if self.probe not in (0, 1) or self.min_blocks not in (1, 2, 3, 4):
            raise ValueError(
                f"gptq_cuda_stream: probe must be 0 or 1, min_blocks 1..4, got {self.probe}, {self.min_blocks}"
            )


def _stage_bytes(spec: StreamSpec) -> int:
    rows = 128 * spec.bits // 32
    return (rows * (288 if spec.pad else 256) + 192 + 8 * spec.mt * 272 + 127) // 128 * 128


def stream_smem_bytes(spec: StreamSpec, m: int) -> int:
    """Dynamic shared memory of one CTA: the ring, its 2·S mbarriers, the consumers' sums [NC][M][64] fp32.

    Example:
        >>> stream_smem_bytes(StreamSpec(4, False, 1, 8, 8), 1)
        58512
    """
    sums = (spec.consumers + (2 if spec.cl else 0)) * m * 64 * 4
    return spec.stages * _stage_bytes(spec) + 16 * spec.stages + 16 + sums


def stream_grid(spec: StreamSpec, n: int, k: int, ctas: int) -> int:
    """The CTAs of one launch for `ctas` wanted (at most one a (strip, block) unit); with clusters, as many as
    keep the most strips a cluster takes lowest (a multiple of `spec.cl`).

    Example:
        >>> stream_grid(StreamSpec(4, False, 1, 8, 8, cl=4), 6144, 4096, 132)  # qkv: 32 clusters of 3 strips
        128
    """
    strips = n // 64
    grid = min(ctas, strips * (k // 128))
    if spec.cl:
        most = -(-strips // max(1, grid // spec.cl))
        grid = -(-strips // most) * spec.cl
    return grid


_SOURCE = r"""
#define BITS %(bits)d
#define BF16 %(bf16)d
#define MT %(mt)d
#define NC %(consumers)d
#define S %(stages)d
#define PAD %(pad)d
#define ZERO_V1 %(zero_v1)d
#define PROBE %(probe)d
#define MIN_BLOCKS %(min_blocks)d
#define CL %(cl)d                       // 0: partial strips summed by ticket; else in a cluster of CL CTAs
#define FOLD 0
#define STAGE_B %(stage_b)d
#define WP (PAD ? 288 : 256)          // bytes between word rows in a stage
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
__launch_bounds__((NC + 1) * 32, MIN_BLOCKS)
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
  const u32 full = smem_u32(smem + S * STAGE_B), empty = full + 8 * S;
  float* red = (float*)(smem + S * STAGE_B + 16 * S + 16);  // [NC][M][64]
  float* fin = red + NC * M * 64;                             // CL: [2][M][64], the partial strips' sums
  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(full + 8 * s);
      asm volatile("mbarrier.init.shared::cta.b64 [%%0], 1;" :: "r"(empty + 8 * s) : "memory");
    }
    mbar_init_fence();
  }
  __syncthreads();

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
      if (lane == 0) {
        fence_proxy_async();
        mbar_expect(bar, tx);
      }
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
        else
          bulk_copy(dst + XOFF + (k - r - 2) * XP * 4, x + (u64)(k - r - 2) * stride_xm + blk * 128, 256, bar);
      }
    }
  } else {  // the consumers
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
#if PROBE
  u32 sink = 0u;
#endif
  __shared__ int last;
  int j0 = 0;
  while (j0 < nu) {  // one strip of the run a round: units j0 .. j1 - 1
    const long long ua = u0 + j0;
    const int strip = (int)(ua / B);
    const int j1 = (int)(min(u1, (long long)(strip + 1) * B) - u0);
    for (int j = j0 + ((warp - j0 %% NC) + NC) %% NC; j < j1; j += NC) {
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


def stream_kernel_source(spec: StreamSpec) -> str:
    """The CUDA C++ text of `fg_gptq_stream` for `spec` (no headers: NVRTC needs no include path).

    Example:
        >>> "fg_gptq_stream" in stream_kernel_source(StreamSpec(4, False, 1, 8, 8))
        True
    """
    return _SOURCE % {
        "bits": spec.bits,
        "bf16": int(spec.bf16),
        "mt": spec.mt,
        "consumers": spec.consumers,
        "stages": spec.stages,
        "pad": int(spec.pad),
        "zero_v1": int(spec.zero_v1),
        "probe": spec.probe,
        "min_blocks": spec.min_blocks,
        "cl": spec.cl,
        "stage_b": _stage_bytes(spec),
        "helpers": HELPERS,
    }
