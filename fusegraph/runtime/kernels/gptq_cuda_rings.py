"""The shared-memory rings that stream GPTQ weight blocks into the small-M kernels (`gptq_cuda_src.py`,
`gptq_cuda_mid.py`), as CUDA C++ text:

- `RING_HELPERS` (both kernels, after `gptq_cuda_ptx.HELPERS`): the cp.async ring's copies of a block's words
  (`cpa_words`) and a lane's reads of a stage (`cpa_read`: its words, scales and zeros). A stage's scales and zeros
  follow its words (128 bytes of scales, then 8·BITS bytes of packed zeros), in both rings; each kernel copies them
  itself (a shared helper for those copies compiled to different SASS, so it stays written twice).
- `TMA_ISSUE`, `TMA_LOOP` (the small-M kernel's `tma` option, measured slower: off): each warp's bulk-copy ring.
"""

from __future__ import annotations

__all__ = ["RING_HELPERS", "TMA_ISSUE", "TMA_LOOP"]

# The cp.async rings (`cpa`): a block's words are copied in global order (lane L takes 16-byte chunk 32c + L, so
# each copy is 512 contiguous bytes, whole sectors) to where their reader takes them: chunk k of lane 4g + t (word
# row t + 4(k / 2), columns 4g.. or 32 + 4g..) at 16-byte slot 32k + 4g + (t ^ (g / 2)), so that the quarter-warps
# of both the copies and the reads hit 8 distinct bank groups. The copies go through L1 (`cp16ca`, see there).
RING_HELPERS = r"""
__device__ __forceinline__ int cpa_slot(int k, int g, int t) { return 32 * k + 4 * g + (t ^ (g >> 1)); }
__device__ __forceinline__ void cpa_words(u32 dst, const u32x4* blk, int lane) {
#pragma unroll
  for (int c = 0; c < NW; ++c) {
    const int row = 2 * c + (lane >> 4), g = lane & 7;
    cp16ca(dst + cpa_slot(2 * (row >> 2) + ((lane >> 3) & 1), g, row & 3) * 16, blk + 32 * c + lane);
  }
}
// lane (g, t)'s words of the stage `st` (word rows t + 4q, columns 4g.. and 32 + 4g..), their scales and the packed
// zero words of columns 4g.. and 32 + 4g.. (`zoff_y` words on)
__device__ __forceinline__ void cpa_read(const unsigned char* st, int g, int t, int zoff_y, u32x4* w, u32x2& sx,
                                         u32x2& sy, u32& zx, u32& zy) {
#pragma unroll
  for (int k = 0; k < NW; ++k) w[k] = *(const u32x4*)(st + cpa_slot(k, g, t) * 16);
  sx = *(const u32x2*)(st + R * 256 + g * 8);
  sy = *(const u32x2*)(st + R * 256 + 64 + g * 8);
  const int zw = BITS == 4 ? g >> 1 : g;  // the packed-zeros word of columns 4g.. (and 32 + 4g..)
  zx = *(const u32*)(st + R * 256 + 128 + zw * 4);
  zy = *(const u32*)(st + R * 256 + 128 + (zw + zoff_y) * 4);
}
"""

# The small-M kernel's bulk-copy ring (its `tma` option, measured slower: off): `issue(u)` copies block u of a warp
# into stage u % TMA (one bulk copy a word row, its scales and zeros; mbarrier completion), then the first TMA.
TMA_ISSUE = r"""
#if TMA
  auto issue = [&](int u) {  // block u of this warp into stage u % TMA: one bulk copy a word row
    const int blk = kb0 + warp + NWARPS * u, st = u % TMA;
    const u32 bar = bars + st * 8, dst = smem_u32(ring + st * STAGE_B);
    if (lane == 0) mbar_expect(bar, R * 256 + 128 + ZB);
    __syncwarp();
    const int grp = group_size == 128 ? blk : blk * 128 / group_size;
    for (int c = lane; c < R + 2; c += 32) {
      if (c < R)
        bulk_copy(dst + c * ROWB, (const unsigned char*)qw + ((u64)strip * (K / P) + (u64)blk * R + c) * 256, 256, bar);
      else if (c == R)
        bulk_copy(dst + R * ROWB, sc + (u64)grp * stride_s + strip * 64, 128, bar);
      else
        bulk_copy(dst + R * ROWB + 128, (const unsigned char*)(qz + (u64)grp * stride_qz) + strip * ZB, ZB, bar);
    }
  };
  if (lane == 0) {
    for (int st = 0; st < TMA; ++st) mbar_init(bars + st * 8);
    mbar_init_fence();
  }
  __syncwarp();
  for (int u = 0; u < TMA && u < nbw; ++u) issue(u);
#endif
"""
# The ring's loop: wait for stage u % TMA, read this lane's words from it, refill it TMA blocks on, compute.
TMA_LOOP = r"""
#if TMA
  Blk& a = bb[0];
  for (int u = 0; u < nbw; ++u) {  // wait for stage u % TMA, read this lane's words, refill it TMA blocks on
    const unsigned char* st = ring + (u % TMA) * STAGE_B;
    mbar_wait(bars + (u % TMA) * 8, (u / TMA) & 1);
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      a.w[2 * q] = *(const u32x4*)(st + (t + 4 * q) * ROWB + g * 16);
      a.w[2 * q + 1] = *(const u32x4*)(st + (t + 4 * q) * ROWB + 128 + g * 16);
    }
    a.sx = *(const u32x2*)(st + R * ROWB + g * 8);
    a.sy = *(const u32x2*)(st + R * ROWB + 64 + g * 8);
    const int zw = BITS == 4 ? g >> 1 : g;  // the packed-zeros word of columns 4g.. (and 32 + 4g..)
    a.zx = *(const u32*)(st + R * ROWB + 128 + zw * 4);
    a.zy = *(const u32*)(st + R * ROWB + 128 + (zw + zoff_y) * 4);
    __syncwarp();
    if (u + TMA < nbw) {
      fence_proxy_async();
      issue(u + TMA);
    }
    compute(a, u);
  }
"""
