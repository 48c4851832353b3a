"""Parts of the warp-specialized RS-wgmma kernel's CUDA text (`gptq_cuda_wgmma_ws_src.py` assembles them).

`X_ZERO_FILL`: rows of x past M zeroed once in every stage (x by cp.async). `ws_device`: its device helpers
(x's block by the copy engine, wgmma fence/commit/wait, the `wgmma.mma_async.m64nNk16` statement with A
from registers, mbarrier init/arrive, the cp.async barrier arrive). `CONSUMER_STORE`: the end of a consumer
warpgroup: its accumulators to the output (SPLIT = 1, straight from the registers) or to
the CTA's split-K sums in shared memory. With SRED the split-K sum is the consumers' own (in `CONSUMER_STORE`):
each CTA owns a band of rows and the others send it their fragments of it by `st.async`. `CLUSTER_SUM`:
otherwise the split-K sum over the thread-block cluster
(distributed shared memory, rank order; VRED: 4 floats a remote load). `SK_EPILOGUE`: stream-K's end
of a tile's run of blocks in a consumer (a whole tile stored; a part written to the workspace, and the
last part's CTA, by ticket, sums every part in CTA order and stores). They read the kernel's macros and
locals.
"""

from __future__ import annotations

__all__ = ["CLUSTER_SUM", "CONSUMER_STORE", "SK_EPILOGUE", "X_ZERO_FILL", "ws_device"]


def _wgmma_asm(tok: int, bf16: bool) -> str:
    """The inline-asm statement of one `wgmma.mma_async.m64n{tok}k16` with A from registers."""
    nacc = tok // 2
    regs = ", ".join(f"%{i}" for i in range(nacc))
    a = ", ".join(f"%{nacc + i}" for i in range(4))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(nacc))
    ty = "bf16" if bf16 else "f16"
    return (
        f'asm volatile("wgmma.mma_async.sync.aligned.m64n{tok}k16.f32.{ty}.{ty} {{{regs}}}, {{{a}}}, %{nacc + 4}, '
        f'1, 1, 1, 0;\\n" : {outs} : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc));'
    )


_DEVICE = r"""
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ void keep(float* d) {  // pin the accumulators across the async wgmmas
#pragma unroll
  for (int i = 0; i < NACC; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
}
__device__ __forceinline__ void wgmma(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u64 desc) {
  @WGMMA@
}
__device__ __forceinline__ void cp_arrive(u32 bar) {  // the barrier completes once this thread's cp.asyncs land
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_init_n(u32 bar, u32 n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(n) : "memory");
}
__device__ __forceinline__ void cp16z(u32 s, const void* g, u32 n) {  // 16 bytes, the last 16 - n of them zero
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(s), "l"(g), "r"(n));
}
struct __attribute__((aligned(16))) f32x4 { float x, y, z, w; };
struct __align__(64) TmaDesc { unsigned long long d[16]; };  // a CUtensorMap (128 bytes, opaque)
__device__ __forceinline__ void tma_2d(u32 dst, const TmaDesc* map, int c0, int c1, u32 bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
               :: "r"(dst), "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
// 16 bytes into CTA `rank`'s shared memory at its address `local`, counted on its barrier at `bar` (st.async)
__device__ __forceinline__ void st_async4(u32 local, u32 bar, int rank, float a, float b, float c, float d) {
  u32 ra, rb;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(local), "r"(rank));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rb) : "r"(bar), "r"(rank));
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];"
               :: "r"(ra), "f"(a), "f"(b), "f"(c), "f"(d), "r"(rb) : "memory");
}
// MC: arrive on the peer CTA's (cluster rank ^ 1) barrier at the same address
__device__ __forceinline__ void mbar_arrive_peer(u32 bar) {
  u32 rank, ra;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(bar), "r"(rank ^ 1u));
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" :: "r"(ra) : "memory");
}
// MC: this CTA's half of x's block (64 values x TOK rows, half = cluster rank) into both CTAs of the cluster
__device__ __forceinline__ void x_tma_mc(u32 st, const TmaDesc* map, int kbase, int m0, u32 bar) {
  u32 rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  if (PROBE == 2) {
    mbar_arrive(bar);
  } else {
    mbar_expect(bar, TOK * 256);  // both halves land here (the peer's may come first: tx-count below zero)
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%2, %3}], [%4], %5;"
                 :: "r"(st + rank * (TOK * 128)), "l"((unsigned long long)map), "r"(kbase + 64 * (int)rank), "r"(m0),
                    "r"(bar), "h"((unsigned short)3) : "memory");
  }
}
// x's 128-row block at column kbase, rows m0..: two boxes of 64 values x TOK rows (rows past M: zeros), 128-byte swizzle
__device__ __forceinline__ void x_tma(u32 st, const TmaDesc* map, int kbase, int m0, u32 bar) {
  if (PROBE == 2) {
    mbar_arrive(bar);
  } else {
    mbar_expect(bar, TOK * 256);
    tma_2d(st, map, kbase, m0, bar);
    tma_2d(st + TOK * 128, map, kbase + 64, m0, bar);
  }
}

"""


def ws_device(tok: int, bf16: bool) -> str:
    """The kernel's device helpers, with the wgmma statement of N = `tok` (f16 or bf16 inputs).

    Example:
        >>> "m64n64k16.f32.bf16.bf16" in ws_device(64, True)
        True
    """
    return _DEVICE.replace("@WGMMA@", _wgmma_asm(tok, bf16))


X_ZERO_FILL = r"""
#if !SK && !TMA  // rows of x past M stay zero in every stage (the producer never writes them)
  for (int i = tid; i < STAGES * 16 * (TOK - mc); i += blockDim.x) {
    const int s = i / (16 * (TOK - mc)), r = i - s * 16 * (TOK - mc);
    const int m = mc + r / 16, cc = r % 16;
    u32* p = (u32*)(ringp + s * STAGE_BYTES + (cc * MTT + (m >> 3)) * 128 + (m & 7) * 16);
    p[0] = p[1] = p[2] = p[3] = 0u;
  }
#endif
"""

CONSUMER_STORE = r"""
#if SPLIT == 1 && OSTAGE  // through shared memory (fp32, as the split-K sums): the tile's rows by 16-byte stores
    {
      // fp32 from the accumulators after the barrier: ptxas moved fp16 conversions of them above the wgmma wait
      float* tile = (float*)ringp;  // [TOK][FSTRIDE]: every stage is consumed once all consumers pass the barrier
      asm volatile("bar.sync 1, %0;" :: "r"(128 * NCW) : "memory");
#pragma unroll
      for (int j = 0; j < MTT; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          tile[(8 * j + 2 * t + (c & 1)) * FSTRIDE + cw * 64 + ((c >> 1) ? c1 : c0)] = acc[4 * j + c];
      asm volatile("bar.sync 1, %0;" :: "r"(128 * NCW) : "memory");
      u16* obase = out + (u64)m0 * stride_om + strip0 * 64;
      for (int i = cw * 128 + ctid; i < mc * NCW * 8; i += 128 * NCW) {  // row i / (8·NCW), 8 outputs a thread
        const int r = i / (NCW * 8), q = i - r * (NCW * 8);
        const f32x4 lo = *(const f32x4*)(tile + r * FSTRIDE + q * 8), hi = *(const f32x4*)(tile + r * FSTRIDE + q * 8 + 4);
        u32x4 h;
        h.x = (u32)f2h(lo.x) | ((u32)f2h(lo.y) << 16);
        h.y = (u32)f2h(lo.z) | ((u32)f2h(lo.w) << 16);
        h.z = (u32)f2h(hi.x) | ((u32)f2h(hi.y) << 16);
        h.w = (u32)f2h(hi.z) | ((u32)f2h(hi.w) << 16);
        *(u32x4*)(obase + (u64)r * stride_om + q * 8) = h;
      }
    }
#elif SPLIT == 1
    u16* orow = out + (u64)m0 * stride_om + (strip0 + cw) * 64;
#pragma unroll
    for (int j = 0; j < MTT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = 8 * j + 2 * t + (c & 1);
        if (m < mc) orow[(u64)m * stride_om + ((c >> 1) ? c1 : c0)] = f2h(acc[4 * j + c]);
      }
#elif SRED  // CTA r owns the rows [r·RS, (r + 1)·RS): the others send it their fragments of those rows
    {
      const u32 rbar = bars + 8 * (2 * STAGES);
      const int g0 = ks * (RS / 8), g1 = ((ks + 1) * RS < TOK ? (ks + 1) * RS : TOK) / 8;
      if (ctid == 0 && cw == 0) mbar_expect(rbar, (u32)((SPLIT - 1) * (g1 > g0 ? g1 - g0 : 0) * 128 * NCW * 16));
      cluster_sync();  // every ring is free and every owner's barrier armed
#pragma unroll
      for (int j = 0; j < MTT; ++j) {  // to slot q of the owner's [SPLIT - 1][RS / 8][128 · NCW] float4s
        const int own = 8 * j / RS;
        if (own != ks) {
          const int q = ks < own ? ks : ks - 1;
          const u32 off = (u32)(((q * (RS / 8) + j - own * (RS / 8)) * (128 * NCW) + cw * 128 + ctid) * 16);
          st_async4(ring + off, rbar, own, acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
        }
      }
      mbar_wait(rbar, 0);
      u16* orow = out + (u64)m0 * stride_om + (strip0 + cw) * 64;
#pragma unroll
      for (int j = 0; j < MTT; ++j) {
        if (8 * j / RS != ks) continue;
        for (int q = 0; q < SPLIT - 1; ++q) {  // the others' parts in rank order
          const f32x4 v = *(const f32x4*)(ringp + ((q * (RS / 8) + j - g0) * (128 * NCW) + cw * 128 + ctid) * 16);
          acc[4 * j] += v.x; acc[4 * j + 1] += v.y; acc[4 * j + 2] += v.z; acc[4 * j + 3] += v.w;
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int m = 8 * j + 2 * t + (c & 1);
          if (m < mc) orow[(u64)m * stride_om + ((c >> 1) ? c1 : c0)] = f2h(acc[4 * j + c]);
        }
      }
      cluster_sync();  // no CTA leaves while its parts may still be read
    }
#else
    float* fin = (float*)ringp;  // [TOK][FSTRIDE]; every stage is consumed once all consumers pass the barrier
    asm volatile("bar.sync 1, %0;" :: "r"(128 * NCW) : "memory");
#pragma unroll
    for (int j = 0; j < MTT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = 8 * j + 2 * t + (c & 1);
        if (m < mc) fin[m * FSTRIDE + cw * 64 + ((c >> 1) ? c1 : c0)] = acc[4 * j + c];
      }
#endif
"""

CLUSTER_SUM = r"""
#if SPLIT > 1 && !SRED
  cluster_sync();
  {  // CTA `ks` of the cluster sums its share of the outputs over the cluster's CTAs, in rank order
    const float* fin = (const float*)ringp;
    const int cwid = NCW * 64, total = mc * cwid;
    const int share = (total / 4 + SPLIT - 1) / SPLIT * 4;  // a multiple of 4 (cwid is)
    const int lo = ks * share, hi = lo + share < total ? lo + share : total;
    u16* orow = out + (u64)m0 * stride_om + strip0 * 64;
#if VRED
    for (int i = lo / 4 + tid; i < hi / 4; i += blockDim.x) {  // 4 outputs a thread (share is a multiple of 4)
      const int row = i / (cwid / 4), col = 4 * (i % (cwid / 4));
      const u32 local = smem_u32(fin + row * FSTRIDE + col);
      float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll
      for (int r = 0; r < SPLIT; ++r) {
        u32 remote;
        float v0, v1, v2, v3;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(r));
        asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                     : "=f"(v0), "=f"(v1), "=f"(v2), "=f"(v3) : "r"(remote) : "memory");
        s0 += v0; s1 += v1; s2 += v2; s3 += v3;
      }
      u32x2 h;
      h.x = (u32)f2h(s0) | ((u32)f2h(s1) << 16);
      h.y = (u32)f2h(s2) | ((u32)f2h(s3) << 16);
      *(u32x2*)(orow + (u64)row * stride_om + col) = h;
    }
#else
    for (int i = lo + tid; i < hi; i += blockDim.x) {
      orow[(u64)(i / cwid) * stride_om + i % cwid] = f2h(cluster_sum(smem_u32(fin + (i / cwid) * FSTRIDE + i % cwid), SPLIT));
    }
#endif
  }
  cluster_exit();
#endif
"""

SK_EPILOGUE = r"""
    if (u % blocks == blocks - 1 || u == u1 - 1) {  // the end of this CTA's run of the tile's blocks
      wg_wait<0>();
      keep(acc);
      mbar_arrive(bars + 8 * (STAGES + pend));
      pend = -1;
      const int tile = u / blocks, blk = u % blocks;
      const int tb = tile * blocks;
      const int m0 = (tile % tiles_m) * TOK, strip0 = (tile / tiles_m) * NCW;
      const int mcs = M - m0 < TOK ? M - m0 : TOK;
      const int me = cw * 128 + ctid;
      bool store = u0 <= tb && blk == blocks - 1;  // the whole tile is this CTA's
      if (!store) {  // a part: slot 0 if it is this CTA's first run, else 1
        f32x4* mine = (f32x4*)(ws + ((u64)gc * 2 + (u0 >= tb ? 0 : 1)) * (TOK * 64 * NCW));
#pragma unroll
        for (int i = 0; i < NACC / 4; ++i) {
          f32x4 v;
          v.x = acc[4 * i]; v.y = acc[4 * i + 1]; v.z = acc[4 * i + 2]; v.w = acc[4 * i + 3];
          mine[i * (128 * NCW) + me] = v;
        }
        __threadfence();
        asm volatile("bar.sync 1, %0;" :: "r"(128 * NCW) : "memory");
        // the CTAs of the tile's first and last blocks: CTA of unit v = ceil((v + 1)·G / U) - 1
        const int gf = (int)(((long long)(tb + 1) * G + U - 1) / U - 1);
        const int gl = (int)(((long long)(tb + blocks) * G + U - 1) / U - 1);
        volatile int* flag = (volatile int*)(smem + 240);
        if (me == 0) {
          const int last = atomicAdd(cnt + tile, 1) == gl - gf;
          if (last) cnt[tile] = 0;  // ready for the next launch
          *flag = last;
        }
        asm volatile("bar.sync 1, %0;" :: "r"(128 * NCW) : "memory");
        store = *flag != 0;
        if (store) {  // the last part in: sum the CTAs' parts in CTA order
          __threadfence();
#pragma unroll
          for (int i = 0; i < NACC; ++i) acc[i] = 0.f;
          for (int r = gf; r <= gl; ++r) {
            const int ur = (int)((long long)r * U / G);
            const f32x4* part = (const f32x4*)(ws + ((u64)r * 2 + (ur >= tb ? 0 : 1)) * (TOK * 64 * NCW));
#pragma unroll
            for (int i = 0; i < NACC / 4; ++i) {
              float v0, v1, v2, v3;
              asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];"
                           : "=f"(v0), "=f"(v1), "=f"(v2), "=f"(v3) : "l"(part + i * (128 * NCW) + me));
              acc[4 * i] += v0; acc[4 * i + 1] += v1; acc[4 * i + 2] += v2; acc[4 * i + 3] += v3;
            }
          }
        }
      }
      if (store) {
        u16* orow = out + (u64)m0 * stride_om + (strip0 + cw) * 64;
#pragma unroll
        for (int j = 0; j < MTT; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int m = 8 * j + 2 * t + (c & 1);
            if (m < mcs) orow[(u64)m * stride_om + ((c >> 1) ? c1 : c0)] = f2h(acc[4 * j + c]);
          }
      }
#pragma unroll
      for (int i = 0; i < NACC; ++i) acc[i] = 0.f;
    }
"""
