"""The device helpers of the CUDA small-M GPTQ kernel (`gptq_cuda_src.py` puts them in front of the
kernel), as CUDA C++ text with inline PTX: loads, cp.async, lop3/prmt, packed f16x2/bf16x2 math,
conversions, `mma.sync.m16n8k16`, and the magic-number dequantization of one word.

They read the macros BITS, BF16 (and P, NJ derived here) that the kernel text defines first.
`SCALED_DEQUANT` (`dq<J>`: a word's pair J as (q - z)·s) is shared by the mid-M and wgmma kernels.
`EPILOGUE` is the end of the kernel: the CTA's warps summed in shared memory (`red`), then the
split-K reduction (a cluster through distributed shared memory, or the last CTA by atomic ticket:
`gptq_cuda_split_sum.py`, shared with the mid-M kernel) and the output store. The weight rings of both
small-M kernels (bulk-copy and cp.async) are in `gptq_cuda_rings.py`.
"""

from __future__ import annotations

from fusegraph.runtime.kernels.gptq_cuda_split_sum import split_sum

__all__ = ["EPILOGUE", "FOLD_SUMS", "HELPERS", "SCALED_DEQUANT"]

HELPERS = r"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
struct __attribute__((aligned(16))) u32x4 { u32 x, y, z, w; };
struct __attribute__((aligned(8))) u32x2 { u32 x, y; };
struct __attribute__((aligned(16))) i32x4 { int x, y, z, w; };
struct __attribute__((aligned(8))) f32x2 { float x, y; };

#define P (32 / BITS)            // values a word
#define R (128 / P)              // word rows a 128-row block
#define NQ (R / 4)               // word rows a lane takes per block (t + 4q)
#define NJ (P / 2)               // value pairs a word
#define NW (2 * NQ)              // 16-byte words a lane loads per block

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
// 16 bytes global -> shared, asynchronously, bypassing L1 (.cg), or through it (.ca: cp16ca). On an H200 (ncu, 10th
// session) each .cg copy was its own L2 request, so a warp's 32 copies of 16 contiguous bytes each read every sector
// twice (gate_up M=1 through a ring: 3.45M requests for 3.50M sectors, 37 µs; with .ca 0.50M for 1.93M as the register
// loads, 21 µs). The words' rings and the small-M kernel's x slice copy with .ca (o_proj M=16 8.7 -> 7.6 µs); the
// mid-M kernel's x blocks and the wgmma kernel keep .cg (.ca measured 0-6% slower there, M = 16..1024).
__device__ __forceinline__ void cp16(u32 s, const void* g) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(s), "l"(g));
}
__device__ __forceinline__ void cp16ca(u32 s, const void* g) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(s), "l"(g));
}
__device__ __forceinline__ u32x4 ldg_stream(const u32x4* p) {  // read once: no L1 allocation
  u32x4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ void prefetch_l2(const void* p, u32 bytes) {  // one bulk request (Hopper)
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p), "r"(bytes) : "memory");
}
// thread-block clusters (Hopper): every thread of every CTA of the cluster meets here
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// a cluster's last barrier: no CTA leaves while a peer may still load from its shared memory. Execution only (a peer's
// loads have returned before it gets here: its stores use them); a release would wait for this thread's global stores
__device__ __forceinline__ void cluster_exit() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\nbarrier.cluster.wait.aligned;" ::: "memory");
}
// the sum, in rank order, of the float at shared address `local` in each of the cluster's first `n` CTAs
__device__ __forceinline__ float cluster_sum(u32 local, int n) {
  float s = 0.f;
#pragma unroll
  for (int r = 0; r < n; ++r) {
    u32 remote;
    float v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(r));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
    s += v;
  }
  return s;
}
// mbarrier + bulk copies (TMA, Hopper): one barrier a ring stage, lane 0 arms it with the stage's bytes
__device__ __forceinline__ void mbar_init(u32 bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               :: "r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {  // generic-proxy reads of a stage before TMA rewrites it
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ u32x2 ldg8(const void* p) {  // shared by a column group's 4 lanes: through L1
  u32x2 v;
  asm volatile("ld.global.nc.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ u32 ldg4(const void* p) {
  u32 v;
  asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ void pdl_wait() {  // programmatic dependent launch: the previous kernel's writes
  asm volatile("griddepcontrol.wait;" ::: "memory");
}
__device__ __forceinline__ void pdl_trigger() {  // a kernel launched with PDL after this one may start now
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
// ptxas rebuilds loop-invariant values (a lane's offsets from threadIdx, 64-bit products) wherever a loop uses them
// instead of holding them in registers: an empty asm that may "change" the value makes it hold that value
__device__ __forceinline__ void hold(u32& v) { asm volatile("" : "+r"(v)); }
template <class T> __device__ __forceinline__ void hold(T*& p) { asm volatile("" : "+l"(p)); }
__device__ __forceinline__ float shfl_xor(float v, int o) {
  float r;
  asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(o));
  return r;
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ u32 lop3(u32 a, u32 b, u32 c) {  // (a & b) | c
  u32 d;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}
__device__ __forceinline__ u32 sub2(u32 a, u32 b) {
  u32 d;
#if BF16
  asm("sub.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
#else
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
#endif
  return d;
}
__device__ __forceinline__ u32 fma2(u32 a, u32 b, u32 c) {
  u32 d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ float h2f(u32 h) {
#if BF16
  return __uint_as_float(h << 16);
#else
  float f;
  u16 v = (u16)h;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
  return f;
#endif
}
__device__ __forceinline__ u16 f2h(float f) {
  u16 h;
#if BF16
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
#else
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
#endif
  return h;
}
__device__ __forceinline__ void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if BF16
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
#endif
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 comp(const u32x4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// The NJ pairs (q - z) of word w: d[j] holds the rows 2(jR + r) + {0, 1} of its column. FOLD (fp16): the raw pairs,
// 1024 + q (4-bit odd j: 1024 + 16q, multiplied by x/16), whose bias 1024 + z the kernel takes off each block's sums.
__device__ __forceinline__ void dequant(u32 w, u32 mz, u32 nzh, u32* d) {
#if FOLD && BITS == 4
  d[0] = lop3(w, 0x000f000fu, 0x64006400u);
  d[1] = lop3(w, 0x00f000f0u, 0x64006400u);
  d[2] = lop3(w >> 8, 0x000f000fu, 0x64006400u);
  d[3] = lop3(w >> 8, 0x00f000f0u, 0x64006400u);
#elif FOLD
  d[0] = prmt(w, 0x64646464u, 0x4240u);
  d[1] = prmt(w, 0x64646464u, 0x4341u);
#elif BITS == 4 && !BF16
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
// Act-order: x's columns perm[0 .. 8·chunks) of rows 0..M-1 (M <= ROWS) into shared memory (row m at xs + m·xstride),
// column-chunk major with the loads ahead: a thread's perm of up to 2 chunks of 8 columns first, then per chunk every
// row's values into registers, then the stores (3 load latencies where a chunk-by-chunk loop waits twice per chunk).
template <int ROWS>
__device__ __forceinline__ void gather_x(const u16* __restrict__ x, const int* __restrict__ perm, u32* xs, int M,
                                         int chunks, int stride_xm, int xstride, int tid, int nthreads) {
  for (int c0 = tid; c0 < chunks; c0 += 2 * nthreads) {
    i32x4 p[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if (c0 + h * nthreads < chunks) {
        p[h][0] = *(const i32x4*)(perm + (c0 + h * nthreads) * 8);
        p[h][1] = *(const i32x4*)(perm + (c0 + h * nthreads) * 8 + 4);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int cc = c0 + h * nthreads;
      if (cc >= chunks) break;
      u32x4 v[ROWS];
#pragma unroll
      for (int m = 0; m < ROWS; ++m)
        if (m < M) {
          const u16* xr = x + (u64)m * stride_xm;
          v[m].x = (u32)xr[p[h][0].x] | ((u32)xr[p[h][0].y] << 16);
          v[m].y = (u32)xr[p[h][0].z] | ((u32)xr[p[h][0].w] << 16);
          v[m].z = (u32)xr[p[h][1].x] | ((u32)xr[p[h][1].y] << 16);
          v[m].w = (u32)xr[p[h][1].z] | ((u32)xr[p[h][1].w] << 16);
        }
#pragma unroll
      for (int m = 0; m < ROWS; ++m)
        if (m < M) *(u32x4*)(xs + m * xstride + cc * 4) = v[m];
    }
  }
}

"""

# The dequantization of the mid-M and wgmma kernels (reads BITS and BF16): `dq_raw<J>` gives pair J of a word as
# (q - z) (exact) in one f16x2/bf16x2 register, `dq<J>` as (q - z)·s (the scale folded in).
SCALED_DEQUANT = r"""
__device__ __forceinline__ u32 mul2(u32 a, u32 b) {
  u32 d;
#if BF16
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
#else
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
#endif
  return d;
}
// Pair J of word w, (q - z): the rows 2(J·R + r) + {0, 1} of its column.
template <int J> __device__ __forceinline__ u32 dq_raw(u32 w, u32 mz, u32 nzh) {
#if BITS == 4 && !BF16
  const u32 v = (J >= 2) ? (w >> 8) : w;
  const u32 d = (J & 1) ? fma2(lop3(v, 0x00f000f0u, 0x64006400u), 0x2c002c00u, nzh)
                        : sub2(lop3(v, 0x000f000fu, 0x64006400u), mz);
#elif BITS == 4
  const u32 d = sub2(lop3(w >> (4 * J), 0x000f000fu, 0x43004300u), mz);
#else
  const u32 d = sub2(prmt(w, 0x64646464u, J ? 0x4341u : 0x4240u), mz);
#endif
  return d;
}
// The same pair times its column's scale, (q - z)·s.
template <int J> __device__ __forceinline__ u32 dq(u32 w, u32 mz, u32 nzh, u32 s2) {
  return mul2(dq_raw<J>(w, mz, nzh), s2);
}
"""

# FOLD: after x's slice is staged, (1024·Σx_lo + 64·Σx_hi, Σx) of each row's block into `xsum` [M][bps] (the warps'
# partial-sum space, free until the epilogue): x_hi are the rows whose 4-bit pairs come ×16 (j odd: 32..63, 96..127)
FOLD_SUMS = r"""
#if FOLD
  f32x2* xsum = (f32x2*)red;
  for (int pr = warp; pr < M * bps; pr += NWARPS) {  // one warp a (row, block): 64 words, 2 rows each
    const int m = pr / bps, lb = pr - m * bps;
    const u32 w0 = xs[m * xstride + lb * 64 + lane], w1 = xs[m * xstride + lb * 64 + 32 + lane];
    float v = h2f(w0 & 0xffffu) + h2f(w0 >> 16) + h2f(w1 & 0xffffu) + h2f(w1 >> 16);
    float hi = BITS == 4 && lane >= 16 ? v : 0.f;  // words 16..31 of each half: rows 32..63 and 96..127
#pragma unroll
    for (int o = 16; o; o >>= 1) {
      v += shfl_xor(v, o);
      hi += shfl_xor(hi, o);
    }
    if (lane == 0) xsum[pr] = f32x2{1024.f * (v - hi) + 64.f * hi, v};
  }
  __syncthreads();
#endif
"""

# The kernel's end: `red` holds each warp's sums [NWARPS][M][64]; reads the kernel's locals.
_CLUSTER_SUM, _TICKET_SUM = split_sum("(i >> 6)", "strip * 64 + (i & 63)", "strip")
EPILOGUE = (
    r"""
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
"""
    + _CLUSTER_SUM
    + "#elif SPLIT > 1\n"
    + _TICKET_SUM
    + "#endif\n}\n"
)
