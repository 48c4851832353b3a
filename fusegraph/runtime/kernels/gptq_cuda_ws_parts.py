"""Device helpers of the warp-specialized GPTQ kernel (`gptq_cuda_ws_src.py` puts them in front of it), as
CUDA C++ text with inline PTX: mbarrier init/arrive, cp.async with zero fill and its mbarrier arrival,
shared-memory loads/stores, and `dequant_half`, the producer's dequantization of half a 128-row block
of W into the K-major core-matrix tile the wgmmas read.

They read the kernel's macros (BN, NPT, NCOL, RQS, NRQ) and `gptq_cuda_ptx`'s helpers (`dq<J>`).
"""

from __future__ import annotations

__all__ = ["WS_DEVICE"]

WS_DEVICE = r"""
__device__ __forceinline__ void bar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void cp16z(u32 s, const void* g, u32 bytes) {  // bytes < 16: the rest zero
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(s), "l"(g), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_arrive_noinc(u32 bar) {  // the thread's cp.asyncs so far arrive on bar
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void sts128(u32 a, u32 x, u32 y, u32 z, u32 w) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" :: "r"(a), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
}
__device__ __forceinline__ u32 lds32(u32 a) {
  u32 v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ u32 lds16(u32 a) {
  u16 v;
  asm volatile("ld.shared.u16 %0, [%1];" : "=h"(v) : "r"(a) : "memory");
  return v;
}
// W's tile for half HALF of a block from the thread's words (loaded once a block): pairs J = 2·HALF + jj of
// word rows 4rq..4rq+3 of column n give 8 consecutive K values, one core-matrix row
// (producer thread ptid: columns ptid % BN + NPT·cc, rq = ptid / BN + RQS·i)
template <int HALF>
__device__ __forceinline__ void dequant_half(const u32 (&w)[NCOL][NRQ][4], u32 bt, int ptid, const u32* mz,
                                             const u32* nzh, const u32* s2) {
#pragma unroll
  for (int cc = 0; cc < NCOL; ++cc) {
    const int n = ptid % BN + NPT * cc;
    const u32 dst = bt + (n >> 3) * 128 + (n & 7) * 16;
#pragma unroll
    for (int i = 0; i < NRQ; ++i) {
      const int rq = ptid / BN + RQS * i;
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        constexpr int J0 = 2 * HALF;
        u32 d[4];
#pragma unroll
        for (int e = 0; e < 4; ++e)
          d[e] = jj == 0 ? dq<J0>(w[cc][i][e], mz[cc], nzh[cc], s2[cc]) : dq<J0 + 1>(w[cc][i][e], mz[cc], nzh[cc], s2[cc]);
        sts128(dst + (jj * 4 + rq) * (BN / 8) * 128, d[0], d[1], d[2], d[3]);  // k chunk 4jj + rq
      }
    }
  }
}
"""
