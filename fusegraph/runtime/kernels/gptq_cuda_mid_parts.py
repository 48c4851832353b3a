"""Parts of the mid-M GPTQ kernel's CUDA C++ text (`gptq_cuda_mid.py` puts them into `fg_gptq_mid_m`).

`MID_GATHER_AHEAD`: act-order's gather ahead (PERM_AHEAD): block u + 1's x gathered through perm into registers
before block u's math (`gather`) and stored to shared memory after it (`put`), block u + 2's perm in flight meanwhile
(`load_perm`).

`MID_EPILOGUE`: each warp's fp32 sums into shared memory (`fin`, [M][NWARPS·64], the x buffers once every warp is
done with them), then the outputs: stored (SPLIT = 1); or summed over the SPLIT CTAs of a thread-block cluster,
each CTA its share in rank order through distributed shared memory (a release barrier before, an execution-only
one after); or written to the workspace, and the last CTA of the tile (an atomic ticket) sums the SPLIT slices in
order and resets its ticket (those two sums: `gptq_cuda_split_sum.py`, shared with the small-M kernel). It reads
the kernel's macros and locals.
"""

from __future__ import annotations

from fusegraph.runtime.kernels.gptq_cuda_split_sum import split_sum

__all__ = ["MID_EPILOGUE", "MID_GATHER_AHEAD"]

MID_GATHER_AHEAD = r"""#if PERM_AHEAD
  u32x4 gv[GCH];  // block u+1's chunks (rows tid/16 + i·NWARPS·2, columns 8·(tid%16)..), gathered ahead
  i32x4 p0, p1;   // the perm of the thread's 8 columns of the next block to gather
  auto load_perm = [&](int u) {
    const int* pp = perm + (kb0 + u) * 128 + (tid & 15) * 8;
    p0 = *(const i32x4*)pp;
    p1 = *(const i32x4*)(pp + 4);
  };
  auto gather = [&](int u) {  // block u's chunks into gv (its perm is in p0/p1), then block u+1's perm
#pragma unroll
    for (int i = 0; i < GCH; ++i) {
      const int m = (tid + i * NWARPS * 32) >> 4;
      if (m < M) {
        const u16* xr = x + (u64)m * stride_xm;
        gv[i].x = (u32)xr[p0.x] | ((u32)xr[p0.y] << 16);
        gv[i].y = (u32)xr[p0.z] | ((u32)xr[p0.w] << 16);
        gv[i].z = (u32)xr[p1.x] | ((u32)xr[p1.y] << 16);
        gv[i].w = (u32)xr[p1.z] | ((u32)xr[p1.w] << 16);
      }
    }
    if (u + 1 < bps) load_perm(u + 1);  // in flight until the next gather: its loads need no wait
  };
  auto put = [&](int u) {  // the gathered chunks into buffer u & 1
    u32* dst = xs + (u & 1) * MROWS * XS + (tid & 15) * 4;
#pragma unroll
    for (int i = 0; i < GCH; ++i) {
      const int m = (tid + i * NWARPS * 32) >> 4;
      if (m < M) *(u32x4*)(dst + m * XS) = gv[i];
    }
  };
#endif
"""

_CLUSTER_SUM, _TICKET_SUM = split_sum("(i / CW)", "col0 + i % CW", "cta")
MID_EPILOGUE = (
    r"""  cp_wait<0>();      // CPA: the groups after the last block's are empty
  __syncthreads();  // every warp is done with the x buffers: they become fin
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = 8 * mt + 2 * t + (c & 1);
        if (m < M) fin[m * CW + warp * 64 + (c >> 1) * 32 + 4 * g + i] = acc[i][mt][c];
      }
  __syncthreads();
  const int total = M * CW, col0 = cta * CW;
#if SPLIT == 1
  for (int i = tid; i < total; i += NWARPS * 32) out[(u64)(i / CW) * stride_om + col0 + i % CW] = f2h(fin[i]);
#elif CLUSTER
"""
    + _CLUSTER_SUM
    + "#else\n"
    + "  for (int i = tid; i < total; i += NWARPS * 32) ws[((u64)ks * M + i / CW) * N + col0 + i % CW] = fin[i];\n"
    + _TICKET_SUM
    + "#endif\n"
)
