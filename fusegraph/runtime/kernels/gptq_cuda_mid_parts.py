"""The mid-M GPTQ kernel's epilogue as CUDA C++ text (`gptq_cuda_mid.py` puts it at the end of `fg_gptq_mid_m`).

`MID_EPILOGUE`: each warp's fp32 sums into shared memory (`fin`, [M][NWARPS·64], the x buffers once every warp is
done with them), then the outputs: stored (SPLIT = 1); or summed over the SPLIT CTAs of a thread-block cluster,
each CTA its share in rank order through distributed shared memory (a release barrier before, an execution-only
one after); or written to the workspace, and the last CTA of the tile (an atomic ticket) sums the SPLIT slices in
order and resets its ticket (those two sums: `gptq_cuda_split_sum.py`, shared with the small-M kernel). It reads
the kernel's macros and locals.
"""

from __future__ import annotations

from fusegraph.runtime.kernels.gptq_cuda_split_sum import split_sum

__all__ = ["MID_EPILOGUE"]

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
