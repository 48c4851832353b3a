"""CUDA C++ source of the small-M GPTQ kernel (`gptq_cuda.py` compiles it with NVRTC), as text.

One kernel, `fg_gptq_small_m`, for x `[M ≤ 16, K]` (fp16, or bf16 at 4 bits) times W stored in the
tiled layout of `fg.gptq.repack` (`gptq_tiled.py`'s docstring): qweight_t int32 `[N/64, K/P, 64]`,
in 128-row block b word row r holds in slot i = e·P/2 + j the value of row 128·b + 2(j·R + r) + e.

- A CTA is one 64-column strip times one K slice (`bps` blocks, blockIdx.y of SPLIT); its warps
  take the slice's blocks in turn. Each thread streams 16-byte words with `cp.async.cg` into its
  own part of a STAGES-deep shared-memory ring (no barrier: a thread reads back only what it
  copied), together with its 8 columns' scales and packed zeros.
- Tensor cores with W^T as the A operand (`mma.m16n8k16`, A = 16 columns × 16 rows, B = x^T,
  n = the row of x): lane (g, t) copies word rows t + 4q of columns 4g..4g+3 and 32+4g..+3, which
  are exactly the A fragments it needs (a0/a2 of column 4g+i, a1/a3 of 32+4g+i). M ≤ 8 takes one
  n-tile, M ≤ 16 two (MT).
- Dequantization in registers (the magic-number trick): fp16 4-bit `lop3(w, 0x000f000f, 0x6400)`
  minus (1024 + z) for the low nibble pairs, `lop3(w, 0x00f000f0, 0x6400)`·1/16 − (64 + z) for the
  high ones (one `sub`/`fma.rn.f16x2` per pair, exact: q − z); bf16 shifts each pair down (magic
  128); 8-bit fp16 takes byte pairs with `prmt`. The scale multiplies each block's fp32 mma sums
  (one group a block: group_size is a multiple of 128), so the products and sums stay fp32.
- x's slice is staged once per CTA in shared memory (gathered through perm for act-order), padded
  so that the B-fragment loads hit 32 distinct banks.
- Split-K reduction: CLUSTER=1 puts the SPLIT CTAs of a strip in one thread-block cluster and sums
  their partials through distributed shared memory (no workspace, no atomics, deterministic);
  otherwise each CTA writes an fp32 slice and the last one (atomic ticket) sums them in order.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KernelSpec", "kernel_source", "smem_bytes", "KERNEL_NAME"]

KERNEL_NAME = "fg_gptq_small_m"


@dataclass(frozen=True)
class KernelSpec:
    """The compile-time parameters of one kernel instance.

    Attributes:
        bits: container bits, 4 or 8.
        bf16: x, scales and output are bf16 (4 bits only), else fp16.
        mt: n-tiles of 8 rows of x: 1 (M ≤ 8) or 2 (M ≤ 16).
        warps: warps per CTA.
        stages: depth of each warp's cp.async ring (≥ 2).
        split: CTAs along K per strip (gridDim.y).
        cluster: split-K reduction through a thread-block cluster (split ≤ 8) instead of a ticket.
        has_perm: act-order (x gathered through perm).
        zero_v1: the qzeros store z − 1.
        min_blocks: `__launch_bounds__`'s minimum CTAs an SM (caps the registers).
    """

    bits: int
    bf16: bool
    mt: int
    warps: int
    stages: int
    split: int
    cluster: bool
    has_perm: bool
    zero_v1: bool
    min_blocks: int = 4

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"gptq_cuda: bits must be 4 or 8, got {self.bits}")
        if self.bf16 and self.bits == 8:
            raise ValueError("gptq_cuda: bf16 needs bits=4 (bf16 cannot hold 128 + 255 exactly)")
        if self.mt not in (1, 2):
            raise ValueError(f"gptq_cuda: mt must be 1 or 2, got {self.mt}")
        if self.warps not in (1, 2, 4, 8) or self.stages < 2 or self.split < 1:
            raise ValueError(f"gptq_cuda: warps {self.warps} (1/2/4/8), stages {self.stages} (≥ 2), split "
                             f"{self.split} (≥ 1)")  # fmt: skip
        if self.cluster and not 2 <= self.split <= 8:
            raise ValueError(f"gptq_cuda: cluster needs 2 ≤ split ≤ 8, got {self.split}")

    @property
    def stage_bytes(self) -> int:
        """One warp's ring slot: 16-byte weight chunks (8 a lane at 4 bits, 16 at 8), then the 8
        column groups' scales (16 B) and zeros (8 B) for one block."""
        words = 8 if self.bits == 4 else 16
        return words * 512 + 256


def smem_bytes(spec: KernelSpec, m: int, bps: int) -> int:
    """Dynamic shared memory of one CTA: the rings, x's slice (m rows, padded), the CTA's partial sums."""
    rings = spec.warps * spec.stages * spec.stage_bytes
    red = spec.warps * m * 64 * 4  # the cross-warp reduction reuses the rings
    return max(rings, red) + m * (bps * 64 + 4) * 4 + m * 64 * 4


_SOURCE = r"""
#define BITS %(bits)d
#define BF16 %(bf16)d
#define MT %(mt)d
#define NWARPS %(warps)d
#define STAGES %(stages)d
#define SPLIT %(split)d
#define CLUSTER %(cluster)d
#define HAS_PERM %(has_perm)d
#define ZERO_V1 %(zero_v1)d
#define MIN_BLOCKS %(min_blocks)d

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
struct __attribute__((aligned(16))) u32x4 { u32 x, y, z, w; };
struct __attribute__((aligned(8))) u32x2 { u32 x, y; };
struct __attribute__((aligned(16))) i32x4 { int x, y, z, w; };

#define P (32 / BITS)            // values a word
#define R (128 / P)              // word rows a 128-row block
#define NQ (R / 4)               // word rows a lane takes per block (t + 4q)
#define NJ (P / 2)               // value pairs a word
#define NW (2 * NQ)              // 16-byte chunks a lane copies per block
#define SLOT_BYTES (NW * 512 + 256)  // + the 8 column groups' scales (16 B) and zeros (8 B)

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %%1; cvt.u32.u64 %%0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void cp16(u32 s, const void* g) {
  asm volatile("cp.async.cg.shared.global [%%0], [%%1], 16;" :: "r"(s), "l"(g));
}
__device__ __forceinline__ void cp8(u32 s, const void* g) {
  asm volatile("cp.async.ca.shared.global [%%0], [%%1], 8;" :: "r"(s), "l"(g));
}
__device__ __forceinline__ void cp4(u32 s, const void* g) {
  asm volatile("cp.async.ca.shared.global [%%0], [%%1], 4;" :: "r"(s), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %%0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ u32 lop3(u32 a, u32 b, u32 c) {  // (a & b) | c
  u32 d;
  asm("lop3.b32 %%0, %%1, %%2, %%3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 d;
  asm("prmt.b32 %%0, %%1, %%2, %%3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}
__device__ __forceinline__ u32 sub2(u32 a, u32 b) {
  u32 d;
#if BF16
  asm("sub.rn.bf16x2 %%0, %%1, %%2;" : "=r"(d) : "r"(a), "r"(b));
#else
  asm("sub.rn.f16x2 %%0, %%1, %%2;" : "=r"(d) : "r"(a), "r"(b));
#endif
  return d;
}
__device__ __forceinline__ u32 fma2(u32 a, u32 b, u32 c) {
  u32 d;
  asm("fma.rn.f16x2 %%0, %%1, %%2, %%3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ float h2f(u32 h) {
#if BF16
  return __uint_as_float(h << 16);
#else
  float f;
  u16 v = (u16)h;
  asm("cvt.f32.f16 %%0, %%1;" : "=f"(f) : "h"(v));
  return f;
#endif
}
__device__ __forceinline__ u16 f2h(float f) {
  u16 h;
#if BF16
  asm("cvt.rn.bf16.f32 %%0, %%1;" : "=h"(h) : "f"(f));
#else
  asm("cvt.rn.f16.f32 %%0, %%1;" : "=h"(h) : "f"(f));
#endif
  return h;
}
__device__ __forceinline__ void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if BF16
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%%0,%%1,%%2,%%3}, {%%4,%%5,%%6,%%7}, {%%8,%%9}, "
      "{%%0,%%1,%%2,%%3};"
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%%0,%%1,%%2,%%3}, {%%4,%%5,%%6,%%7}, {%%8,%%9}, "
      "{%%0,%%1,%%2,%%3};"
#endif
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 comp(const u32x4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// The NJ pairs (q - z) of word w: d[j] holds the rows 2(jR + r) + {0, 1} of its column.
__device__ __forceinline__ void dequant(u32 w, u32 mz, u32 nzh, u32* d) {
#if BITS == 4 && !BF16
  const u32 w8 = w >> 8;
  d[0] = sub2(lop3(w, 0x000f000fu, 0x64006400u), mz);
  d[1] = fma2(lop3(w, 0x00f000f0u, 0x64006400u), 0x2c002c00u, nzh);
  d[2] = sub2(lop3(w8, 0x000f000fu, 0x64006400u), mz);
  d[3] = fma2(lop3(w8, 0x00f000f0u, 0x64006400u), 0x2c002c00u, nzh);
#elif BITS == 4
  d[0] = sub2(lop3(w, 0x000f000fu, 0x43004300u), mz);
  d[1] = sub2(lop3(w >> 4, 0x000f000fu, 0x43004300u), mz);
  d[2] = sub2(lop3(w >> 8, 0x000f000fu, 0x43004300u), mz);
  d[3] = sub2(lop3(w >> 12, 0x000f000fu, 0x43004300u), mz);
#else
  d[0] = sub2(prmt(w, 0x64646464u, 0x4240u), mz);
  d[1] = sub2(prmt(w, 0x64646464u, 0x4341u), mz);
#endif
}

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
  const int kb0 = ks * bps;                        // the CTA's first block
  const int xstride = bps * 64 + 4;                // u32 words a row of x's slice (+4: no bank conflicts)
  const int rings = NWARPS * STAGES * SLOT_BYTES;
  const int red_bytes = NWARPS * M * 64 * 4;
  u32* xs = (u32*)(smem + (rings > red_bytes ? rings : red_bytes));
  float* fin = (float*)(xs + M * xstride);
  unsigned char* ring = smem + warp * STAGES * SLOT_BYTES;

  // this lane's sources: word rows t + 4q, u32x4 g (columns 4g..4g+3) and g + 8 (32 + 4g..)
  const u32x4* wsrc = qw + (u64)strip * (K / P) * 16 + t * 16 + g;
  const u16* ssrc = sc + strip * 64 + 4 * g;
#if BITS == 4
  const u32* zsrc = qz + strip * 8 + (g >> 1);
  const int zoff_y = 4, zshift = 16 * (g & 1);
#else
  const u32* zsrc = qz + strip * 16 + g;
  const int zoff_y = 8, zshift = 0;
#endif
  const int nbw = warp < bps ? (bps - warp + NWARPS - 1) / NWARPS : 0;  // this warp's blocks
  const u32 ring_s = smem_u32(ring) + lane * 16;

  auto issue = [&](int u) {
    const int blk = kb0 + warp + NWARPS * u;
    const u32 s = ring_s + (u %% STAGES) * SLOT_BYTES;
    const u32x4* src = wsrc + (u64)blk * R * 16;
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      cp16(s + (2 * q) * 512, src + q * 64);
      cp16(s + (2 * q + 1) * 512, src + q * 64 + 8);
    }
    const int grp = group_size == 128 ? blk : blk * 128 / group_size;
    if (t == 0) {  // the 4 lanes of a column group share its scales and zeros
      const u32 sz = s - lane * 16 + NW * 512 + g * 16;
      const u16* sp = ssrc + (u64)grp * stride_s;
      cp8(sz, sp);
      cp8(sz + 8, sp + 32);
      const u32* zp = zsrc + (u64)grp * stride_qz;
      cp4(sz + 128 - g * 8, zp);
      cp4(sz + 132 - g * 8, zp + zoff_y);
    }
  };

  // x's slice to shared memory (16-byte chunks of 8 values; every copy in flight at once), then the
  // first STAGES - 1 blocks of each warp
  const int row_chunks = bps * 16, chunks = M * row_chunks;
#if HAS_PERM
#pragma unroll 2
  for (int c = tid; c < chunks; c += NWARPS * 32) {
    const int m = c / row_chunks, cc = c - m * row_chunks;
    const i32x4 p0 = *(const i32x4*)(perm + kb0 * 128 + cc * 8), p1 = *(const i32x4*)(perm + kb0 * 128 + cc * 8 + 4);
    const u16* xr = x + (u64)m * stride_xm;
    u32x4 v;
    v.x = (u32)xr[p0.x] | ((u32)xr[p0.y] << 16);
    v.y = (u32)xr[p0.z] | ((u32)xr[p0.w] << 16);
    v.z = (u32)xr[p1.x] | ((u32)xr[p1.y] << 16);
    v.w = (u32)xr[p1.z] | ((u32)xr[p1.w] << 16);
    *(u32x4*)(xs + m * xstride + cc * 4) = v;
  }
#else
  for (int c = tid; c < chunks; c += NWARPS * 32) {
    const int m = c / row_chunks, cc = c - m * row_chunks;
    cp16(smem_u32(xs + m * xstride + cc * 4), x + (u64)m * stride_xm + kb0 * 128 + cc * 8);
  }
#endif
  cp_commit();
#pragma unroll
  for (int u = 0; u < STAGES - 1; ++u) {
    if (u < nbw) issue(u);
    cp_commit();
  }
  cp_wait<STAGES - 1>();  // x's group is done
  __syncthreads();

  float acc[4][MT][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][mt][c] = 0.f;

  for (int u = 0; u < nbw; ++u) {
    if (u + STAGES - 1 < nbw) issue(u + STAGES - 1);
    cp_commit();
    cp_wait<STAGES - 1>();
    const unsigned char* st = ring + (u %% STAGES) * SLOT_BYTES + lane * 16;
    const unsigned char* sz = st - lane * 16 + NW * 512;
    const u32x4 sv = *(const u32x4*)(sz + g * 16);
    const u32x2 zv = *(const u32x2*)(sz + 128 + g * 8);
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
      }
    }
    u32 mz[4][2], nzh[4][2];  // per column (i, h): the packed magic + z, and -(64 + z) for the x16 pairs
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const u32 zw = h ? zv.y : zv.x;
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
      }
    float cb[4][MT][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int c = 0; c < 4; ++c) cb[i][mt][c] = 0.f;
#pragma unroll
    for (int qq = 0; qq < NQ / 2; ++qq) {
      // word rows t + 8qq (a0/a1: columns 4g+i / 32+4g+i) and t + 8qq + 4 (a2/a3)
      const u32x4 w00 = *(const u32x4*)(st + (4 * qq) * 512), w01 = *(const u32x4*)(st + (4 * qq + 1) * 512);
      const u32x4 w10 = *(const u32x4*)(st + (4 * qq + 2) * 512), w11 = *(const u32x4*)(st + (4 * qq + 3) * 512);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        u32 d0[NJ], d1[NJ], d2[NJ], d3[NJ];
        dequant(comp(w00, i), mz[i][0], nzh[i][0], d0);
        dequant(comp(w01, i), mz[i][1], nzh[i][1], d1);
        dequant(comp(w10, i), mz[i][0], nzh[i][0], d2);
        dequant(comp(w11, i), mz[i][1], nzh[i][1], d3);
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
            mma(cb[i][mt], d0[j], d1[j], d2[j], d3[j], bf[j * (NQ / 2) + qq][mt][0], bf[j * (NQ / 2) + qq][mt][1]);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 sx = i < 2 ? sv.x : sv.y, sy = i < 2 ? sv.z : sv.w;
      const float scx = h2f((i & 1) ? (sx >> 16) : (sx & 0xffffu));
      const float scy = h2f((i & 1) ? (sy >> 16) : (sy & 0xffffu));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        acc[i][mt][0] += cb[i][mt][0] * scx;
        acc[i][mt][1] += cb[i][mt][1] * scx;
        acc[i][mt][2] += cb[i][mt][2] * scy;
        acc[i][mt][3] += cb[i][mt][3] * scy;
      }
    }
  }
  cp_wait<0>();
  __syncthreads();  // every warp is done with its ring: reuse it for the cross-warp sums

  float* red = (float*)smem;  // [NWARPS][M][64]
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
  const int total = M * 64;
  for (int i = tid; i < total; i += NWARPS * 32) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) s += red[w * total + i];
#if SPLIT == 1
    out[(u64)(i >> 6) * stride_om + strip * 64 + (i & 63)] = f2h(s);
#elif CLUSTER
    fin[i] = s;
#else
    ws[((u64)ks * M + (i >> 6)) * N + strip * 64 + (i & 63)] = s;
#endif
  }
#if SPLIT > 1 && CLUSTER
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  {  // CTA `ks` of the cluster sums its share of the outputs over the cluster's CTAs, in rank order
    const int share = (total + SPLIT - 1) / SPLIT;
    const int lo = ks * share, hi = lo + share < total ? lo + share : total;
    for (int i = lo + tid; i < hi; i += NWARPS * 32) {
      const u32 local = smem_u32(fin + i);
      float s = 0.f;
#pragma unroll
      for (int r = 0; r < SPLIT; ++r) {
        u32 remote;
        float v;
        asm volatile("mapa.shared::cluster.u32 %%0, %%1, %%2;" : "=r"(remote) : "r"(local), "r"(r));
        asm volatile("ld.shared::cluster.f32 %%0, [%%1];" : "=f"(v) : "r"(remote) : "memory");
        s += v;
      }
      out[(u64)(i >> 6) * stride_om + strip * 64 + (i & 63)] = f2h(s);
    }
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#elif SPLIT > 1
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(cnt + strip, 1) == SPLIT - 1;
  __syncthreads();
  if (last) {
    __threadfence();
    for (int i = tid; i < total; i += NWARPS * 32) {
      float s = 0.f;
      for (int r = 0; r < SPLIT; ++r) {
        float v;
        const float* p = ws + ((u64)r * M + (i >> 6)) * N + strip * 64 + (i & 63);
        asm volatile("ld.global.cg.f32 %%0, [%%1];" : "=f"(v) : "l"(p));
        s += v;
      }
      out[(u64)(i >> 6) * stride_om + strip * 64 + (i & 63)] = f2h(s);
    }
    if (tid == 0) cnt[strip] = 0;  // ready for the next launch
  }
#endif
}
"""


def kernel_source(spec: KernelSpec) -> str:
    """The CUDA C++ text of `fg_gptq_small_m` for `spec` (no headers: NVRTC needs no include path).

    Example:
        >>> src = kernel_source(KernelSpec(4, False, 1, 4, 3, 4, True, False, True))
        >>> "fg_gptq_small_m" in src
        True
    """
    return _SOURCE % {
        "bits": spec.bits,
        "bf16": int(spec.bf16),
        "mt": spec.mt,
        "warps": spec.warps,
        "stages": spec.stages,
        "split": spec.split,
        "cluster": int(spec.cluster),
        "has_perm": int(spec.has_perm),
        "zero_v1": int(spec.zero_v1),
        "min_blocks": spec.min_blocks,
    }
