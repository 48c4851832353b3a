"""The split-K sum of the small-M and mid-M GPTQ kernels as CUDA C++ text (their epilogues put it after a CTA's own
sums are in `fin` or the workspace `ws`).

`split_sum(row, col, tile)`: for SPLIT > 1, either (CLUSTER) the SPLIT CTAs of a thread-block cluster each sum their
share of the tile's outputs in rank order through distributed shared memory (a release barrier before, an
execution-only one after), or the last CTA of the tile to arrive (an atomic ticket on `cnt[tile]`) sums the SPLIT
slices of `ws` in order, stores, and resets its ticket for the next launch. Output element `i` of the tile (0 ≤ i <
`total`) is row `row` and column `col`, C expressions of `i`. The text reads the kernel's macros (SPLIT, CLUSTER,
NWARPS) and locals (`total`, `fin`, `ws`, `cnt`, `out`, `ks`, `tid`, `M`, `N`, `stride_om`).
"""

from __future__ import annotations

__all__ = ["split_sum"]

_CLUSTER = r"""  cluster_sync();
  {  // CTA `ks` of the cluster sums its share of the outputs over the cluster's CTAs, in rank order
    const int share = (total + SPLIT - 1) / SPLIT;
    const int lo = ks * share, hi = lo + share < total ? lo + share : total;
    for (int i = lo + tid; i < hi; i += NWARPS * 32) {
      out[(u64)@ROW@ * stride_om + @COL@] = f2h(cluster_sum(smem_u32(fin + i), SPLIT));
    }
  }
  cluster_exit();
"""

_TICKET = r"""  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(cnt + @TILE@, 1) == SPLIT - 1;
  __syncthreads();
  if (last) {
    __threadfence();
    for (int i = tid; i < total; i += NWARPS * 32) {
      float s = 0.f;
      for (int r = 0; r < SPLIT; ++r) {
        float v;
        const float* p = ws + ((u64)r * M + @ROW@) * N + @COL@;
        asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
        s += v;
      }
      out[(u64)@ROW@ * stride_om + @COL@] = f2h(s);
    }
    if (tid == 0) cnt[@TILE@] = 0;  // ready for the next launch
  }
"""


def split_sum(row: str, col: str, tile: str) -> tuple[str, str]:
    """(the cluster sum, the ticket sum) as CUDA text for output element `i` at row `row`, column `col` of the tile
    whose ticket is `cnt[tile]`.

    Example:
        >>> cluster, ticket = split_sum("(i >> 6)", "strip * 64 + (i & 63)", "strip")
        >>> "out[(u64)(i >> 6) * stride_om + strip * 64 + (i & 63)]" in cluster and "cnt[strip] = 0" in ticket
        True
    """

    def fill(text: str) -> str:
        return text.replace("@ROW@", row).replace("@COL@", col).replace("@TILE@", tile)

    return fill(_CLUSTER), fill(_TICKET)
