"""CUDA C++ source of the warp-specialized Hopper GPTQ kernel (`gptq_cuda_ws.py` compiles it with NVRTC, sm_90a).

`fg_gptq_ws` computes out `[M, N]` = x `[M, K]` · W `[K, N]` for a plain 4-bit W in the tiled layout of
`fg.gptq.repack` (`gptq_cuda_src.py`'s docstring: in 128-row block b, word row r holds in slot
e·4 + j the value of row 128·b + 2(16j + r) + e, so a word holds adjacent K-row pairs), fp16 or bf16,
with SS `wgmma.mma_async.m64nBNk16` (both operands from shared memory, f32 accumulate):

- A CTA is NPROD (1 or 2) producer warpgroups and BM/64 consumer warpgroups (BM = 64 or 128 rows
  of x) over BN = 128 or 256 columns and a K slice of `bps` 128-row blocks (blockIdx.y of SPLIT).
  CTA b takes the tiles b, b + gridDim.x, ... (persistent when gridDim.x < the tiles; split 1 only),
  row tile fastest, so the CTAs that run together share the weight tile through L2.
- Producers, per 128-row block: warp 0 bulk-copies (TMA, 1-D, a lane a copy) the raw words of the
  BN/64 strips (4 KiB each), the group's BN scales and BN/8 zero words into an RS-deep raw ring
  (mbarrier `rfull`, transaction bytes); each thread loads its words into registers once and
  arrives on `rempty`, after which warp 0 refills the slot (no producer-wide barrier). Per half block (KSTEP = 64 rows), after `empty[s]`: x's tile [BM, 64] goes into stage
  s by cp.async (rows past M zero-filled; lanes l, l + 16 share a 32-byte sector;
  `cp.async.mbarrier.arrive.noinc` counts them on `full[s]`), and the words are dequantized (lop3 magic numbers, (q − z)·s rounded once to
  fp16/bf16, `SCALED_DEQUANT`) and stored as W's tile [64, BN] (st.shared.v4: 4 word rows × one
  pair = 8 consecutive K values of one column = one core-matrix row), then `fence.proxy.async` and
  an arrival on `full[s]`.
- Both tiles are K-major without swizzle: 8×8 core matrices of 128 contiguous bytes, core matrix
  (k chunk c, row group g) at (c·ROWS/8 + g)·128, so a descriptor's leading byte offset (next 8
  values of K) is ROWS/8·128 and its stride byte offset (next 8 rows) 128.
- Consumer warpgroup c (rows 64c.. of the tile), per half block: wait `full[s]`, four wgmmas
  (k16 each) in one commit group, `wgmma.wait_group 1`, then arrive on `empty` of the previous
  stage. No `setmaxnreg`: ptxas allocates the whole kernel under the launch cap (168 registers at 384
  threads; the consumers fit in 152), and a producer cut to 40-48 registers was latency-bound.
- Epilogue: SPLIT = 1 stores the accumulators (m64nBN layout: row 16w + g (+8), column 8j + 2t
  (+1)) straight to the output, masked past M; SPLIT > 1 puts them in shared memory and the SPLIT
  CTAs of a thread-block cluster sum them through distributed shared memory, in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from fusegraph.runtime.kernels.gptq_cuda_ptx import HELPERS, SCALED_DEQUANT
from fusegraph.runtime.kernels.gptq_cuda_ws_parts import WS_DEVICE

__all__ = ["SMEM_LIMIT", "WS_KERNEL_NAME", "WsSpec", "ring_smem_bytes", "ws_kernel_source", "ws_smem_bytes"]

WS_KERNEL_NAME = "fg_gptq_ws"
SMEM_LIMIT = 227 * 1024  # an H100/H200 CTA's opt-in dynamic shared memory


@dataclass(frozen=True)
class WsSpec:
    """The compile-time parameters of one warp-specialized kernel instance (plain 4-bit).

    Attributes:
        bf16: x, scales and output are bf16, else fp16.
        zero_v1: the qzeros store z − 1.
        bm: rows of x a CTA takes: 64 (one consumer warpgroup) or 128 (two).
        bn: output columns a CTA takes: 128 or 256 (the wgmma's N).
        split: CTAs along K (gridDim.y); > 1 sums through a thread-block cluster (≤ 8).
        stages: depth of the x/W tile ring (half blocks of 64 rows of K), ≥ 2.
        rstages: depth of the raw-word ring (128-row blocks), ≥ 1.
        nprod: producer warpgroups (1 or 2): the dequantization's threads.
    """

    bf16: bool
    zero_v1: bool
    bm: int = 128
    bn: int = 256
    split: int = 1
    stages: int = 3
    rstages: int = 4
    nprod: int = 1

    def __post_init__(self) -> None:
        if self.bm not in (64, 128):
            raise ValueError(f"gptq_cuda_ws: bm must be 64 or 128, got {self.bm}")
        if self.bn not in (128, 256):
            raise ValueError(f"gptq_cuda_ws: bn must be 128 or 256, got {self.bn}")
        if not 1 <= self.split <= 8:
            raise ValueError(f"gptq_cuda_ws: split must be 1..8 (a cluster), got {self.split}")
        if self.nprod not in (1, 2):
            raise ValueError(f"gptq_cuda_ws: nprod must be 1 or 2, got {self.nprod}")
        if self.nprod == 2 and self.bm == 128 and self.bn == 256:
            raise ValueError("gptq_cuda_ws: nprod=2 with bm=128, bn=256 needs 512 threads of 154+ registers")
        if self.stages < 2 or self.rstages < 1:
            raise ValueError(
                f"gptq_cuda_ws: stages must be >= 2 and rstages >= 1, got {self.stages}, {self.rstages}"
            )
        if ws_smem_bytes(self) > SMEM_LIMIT:
            raise ValueError(
                f"gptq_cuda_ws: {self} needs {ws_smem_bytes(self)} B of shared memory > {SMEM_LIMIT}"
            )


def _layout(bm: int, bn: int, split: int, stages: int, rstages: int) -> dict[str, int]:
    a_bytes = bm * 64 * 2
    b_bytes = bn * 64 * 2
    raw_bytes = (bn // 64) * 4096 + bn * 2 + bn // 2
    ring = stages * (a_bytes + b_bytes) + rstages * raw_bytes
    fin = bm * (bn + 8) * 4 if split > 1 else 0
    bar_off = (max(ring, fin) + 15) // 16 * 16
    return {"a_bytes": a_bytes, "b_bytes": b_bytes, "raw_bytes": raw_bytes, "bar_off": bar_off,
            "total": bar_off + 8 * (2 * stages + 2 * rstages)}  # fmt: skip


def ring_smem_bytes(bm: int, bn: int, split: int, stages: int, rstages: int) -> int:
    """Dynamic shared memory of one CTA: the tile and raw rings (or the split-K sums), then the mbarriers."""
    return _layout(bm, bn, split, stages, rstages)["total"]


def ws_smem_bytes(spec: WsSpec) -> int:
    """`ring_smem_bytes` of `spec`."""
    return ring_smem_bytes(spec.bm, spec.bn, spec.split, spec.stages, spec.rstages)


def _wgmma_asm(bn: int, bf16: bool) -> str:
    """The inline-asm statement of one SS `wgmma.mma_async.m64n{bn}k16` (A and B K-major descriptors)."""
    nacc = bn // 2
    regs = ",".join(f"%{i}" for i in range(nacc))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(nacc))
    ty = "bf16" if bf16 else "f16"
    return (
        f'asm volatile("wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.{ty}.{ty} {{{regs}}}, %{nacc}, %{nacc + 1}, '
        f'1, 1, 1, 0, 0;\\n" : {outs} : "l"(da), "l"(db));'
    )


_SOURCE = Template(r"""
#define BITS 4
#define BF16 ${bf16}
#define ZERO_V1 ${zero_v1}
#define BM ${bm}
#define BN ${bn}
#define NCONS (BM / 64)
#define NPROD ${nprod}
#define NPT (128 * NPROD)  // producer threads
#define NTHREADS (NPT + 128 * NCONS)
#define SPLIT ${split}
#define STAGES ${stages}
#define RSTAGES ${rstages}
#define NSTRIP (BN / 64)
#define NCOL (BN > NPT ? BN / NPT : 1)  // W columns a producer thread dequantizes
#define RQS (NPT > BN ? NPT / BN : 1)  // producer threads a column
#define NRQ (4 / RQS)  // groups of 4 word rows a thread dequantizes per column
#define XJ (BM * 8 / NPT)  // 16-byte chunks of x's half-block tile a producer thread copies
#define NACC (BN / 2)
#define A_BYTES ${a_bytes}
#define B_BYTES ${b_bytes}
#define RAW_BYTES ${raw_bytes}
#define BAR_OFF ${bar_off}
#define FSTR (BN + 8)  // the split-K sums' row stride (floats): 8 rows of a warp's float2 stores hit distinct banks
${helpers}${scaled_dequant}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ void keep(float* d) {  // pin the accumulators across the async wgmmas
#pragma unroll
  for (int i = 0; i < NACC; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
}
__device__ __forceinline__ void wgmma(float* d, u64 da, u64 db) {
  ${wgmma_asm}
}
${ws_device}
extern "C" __global__ void
#if SPLIT > 1
__cluster_dims__(1, SPLIT, 1)
#endif
__launch_bounds__(NTHREADS, 1)
fg_gptq_ws(const u16* __restrict__ x, const u32* __restrict__ qw, const u16* __restrict__ sc,
           const u32* __restrict__ qz, u16* __restrict__ out, int M, int N, int K, int group_size, int bps,
           int mtiles, int ntiles, int stride_xm, int stride_s, int stride_qz, int stride_om) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, wg = tid >> 7, ptid = tid;  // ptid: the producer thread (wg < NPROD)
  const int ks = blockIdx.y, kb0 = ks * bps;
  // this CTA's tiles: blockIdx.x, + gridDim.x, ... (row tile fastest: the CTAs that run together share W's tile)
  const int my_tiles = (ntiles - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x;
  const u32 sbase = smem_u32(smem);
  const u32 a_ring = sbase, b_ring = sbase + STAGES * A_BYTES, r_ring = b_ring + STAGES * B_BYTES;
  const u32 bars = sbase + BAR_OFF;
#define FULL(s) (bars + 8 * (s))
#define EMPTY(s) (bars + 8 * (STAGES + (s)))
#define RFULL(r) (bars + 8 * (2 * STAGES + (r)))
#define REMPTY(r) (bars + 8 * (2 * STAGES + RSTAGES + (r)))
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      bar_init(FULL(s), 2 * NPT);  // NPT cp.async arrivals (noinc) + NPT after the W stores
      bar_init(EMPTY(s), 128 * NCONS);
    }
    for (int r = 0; r < RSTAGES; ++r) {
      bar_init(RFULL(r), 1);
      bar_init(REMPTY(r), NPT);  // every producer thread has its words of the slot
    }
    mbar_init_fence();
  }
  __syncthreads();
  int mc = 0;  // rows of x in the (last) tile
  if (wg < NPROD) {  // ---- producer warpgroups
    const int items = my_tiles * bps;  // (tile, block) pairs of this CTA, in order
    int ia = 0, ia_tl = 0, ia_u = 0;  // warp 0: the next item whose raw words to fetch, its tile and block
    auto issue_next = [&]() {  // warp 0: item ia's raw words, scales and zeros into raw slot ia % RSTAGES, a lane a copy
      const int lane = ptid & 31, n0 = ((blockIdx.x + ia_tl * gridDim.x) / mtiles) * BN, blk = kb0 + ia_u;
      const u32 dst = r_ring + (ia % RSTAGES) * RAW_BYTES, bar = RFULL(ia % RSTAGES);
      if (lane == 0) mbar_expect(bar, RAW_BYTES);
      __syncwarp();
      if (lane < NSTRIP) {
        bulk_copy(dst + lane * 4096, qw + ((u64)(n0 / 64 + lane) * (K / 8) + (u64)blk * 16) * 64, 4096, bar);
      } else if (lane < NSTRIP + 2) {
        const int grp = group_size == 128 ? blk : blk * 128 / group_size;
        if (lane == NSTRIP) bulk_copy(dst + NSTRIP * 4096, sc + (u64)grp * stride_s + n0, BN * 2, bar);
        else bulk_copy(dst + NSTRIP * 4096 + BN * 2, qz + (u64)grp * stride_qz + n0 / 8, BN / 2, bar);
      }
      ++ia;
      if (++ia_u == bps) ia_u = 0, ++ia_tl;
    };
    if (ptid < 32)
      while (ia < RSTAGES && ia < items) issue_next();
    // the thread's 16-byte chunks of x's tile, hoisted: lanes l and l + 16 read the two halves of a 32-byte sector
    // of row m (k chunks kc, kc + 1), and each 8 lanes write 128 contiguous bytes (one wavefront) of a core matrix
    u32 xs_off[XJ];
    int xrow[XJ], xkc[XJ];
#pragma unroll
    for (int j = 0; j < XJ; ++j) {
      const int q = (ptid >> 5) * 16 + (ptid & 15) + (NPT / 2) * j;  // the (row, k-chunk pair) index
      const int m = q % BM, kc = 2 * (q / BM) + ((ptid >> 4) & 1);
      xs_off[j] = (kc * (BM / 8) + (m >> 3)) * 128 + (m & 7) * 16;
      xrow[j] = m;
      xkc[j] = kc;
    }
    u32 wsrc[NCOL];  // the thread's columns in a raw slot
#pragma unroll
    for (int cc = 0; cc < NCOL; ++cc) {
      const int n = ptid % BN + NPT * cc;
      wsrc[cc] = ((n >> 6) * 16 * 64 + (n & 63)) * 4 + (ptid / BN) * 4 * 256;
    }
    int i = 0;  // the item
    for (int tl = 0; tl < my_tiles; ++tl) {
      const int m0 = ((blockIdx.x + tl * gridDim.x) % mtiles) * BM;
      mc = M - m0 < BM ? M - m0 : BM;
      const u16* xp[XJ];  // row m0 + xrow[j] of x at the K slice, chunk xkc[j]; rows past M: row 0 (zero-filled)
      bool xin[XJ];
#pragma unroll
      for (int j = 0; j < XJ; ++j) {
        xin[j] = xrow[j] < mc;
        xp[j] = x + (xin[j] ? (u64)(m0 + xrow[j]) * stride_xm + xkc[j] * 8 : 0) + kb0 * 128;
      }
      for (int u = 0; u < bps; ++u, ++i) {
      const int r = i % RSTAGES;
      mbar_wait(RFULL(r), (i / RSTAGES) & 1);
      const u32 raw = r_ring + r * RAW_BYTES;
      u32 w[NCOL][NRQ][4];
#pragma unroll
      for (int cc = 0; cc < NCOL; ++cc)
#pragma unroll
        for (int q = 0; q < NRQ; ++q)
#pragma unroll
          for (int e = 0; e < 4; ++e) w[cc][q][e] = lds32(raw + wsrc[cc] + (4 * RQS * q + e) * 256);
      u32 mz[NCOL], nzh[NCOL], s2[NCOL];
#pragma unroll
      for (int cc = 0; cc < NCOL; ++cc) {
        const int n = ptid % BN + NPT * cc;
        const u32 z = (lds32(raw + NSTRIP * 4096 + BN * 2 + (n >> 3) * 4) >> (4 * (n & 7))) & 15u;
#if BF16
        mz[cc] = z * 0x10001u + (0x4300u + ZERO_V1) * 0x10001u;
        nzh[cc] = 0u;
#else
        mz[cc] = z * 0x10001u + (0x6400u + ZERO_V1) * 0x10001u;
        nzh[cc] = sub2(0x63806380u, mz[cc]);
#endif
        s2[cc] = lds16(raw + NSTRIP * 4096 + n * 2) * 0x10001u;
      }
      bar_arrive(REMPTY(r));
      if (ptid < 32 && i >= 1 && ia < items) {  // refill the previous item's slot once every thread has its words
        mbar_wait(REMPTY((i - 1) % RSTAGES), ((i - 1) / RSTAGES) & 1);
        fence_proxy_async();
        issue_next();
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int h = 2 * i + half, s = h % STAGES;
        mbar_wait(EMPTY(s), ((h / STAGES) & 1) ^ 1);
        const u32 at = a_ring + s * A_BYTES;
#pragma unroll
        for (int j = 0; j < XJ; ++j) {
          cp16z(at + xs_off[j], xp[j] + u * 128 + half * 64, xin[j] ? 16u : 0u);
        }
        cp_arrive_noinc(FULL(s));
        if (half == 0) dequant_half<0>(w, b_ring + s * B_BYTES, ptid, mz, nzh, s2);
        else dequant_half<1>(w, b_ring + s * B_BYTES, ptid, mz, nzh, s2);
        fence_proxy_async();  // the generic-proxy W stores -> the wgmmas' async-proxy reads
        bar_arrive(FULL(s));
      }
      }
    }
  } else {  // ---- consumer warpgroups
    const int c = wg - NPROD;
    const int w4 = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int rl = 64 * c + 16 * w4 + g;  // the tile's row of acc[4j], acc[4j + 1]; +8 for 4j + 2, 4j + 3
    // descriptors: start >> 4 (bits 0-13), leading byte offset >> 4 (16-29), stride byte offset >> 4 (32-45)
    const u64 dA = ((u64)((BM / 8 * 128) >> 4) << 16) | ((u64)(128 >> 4) << 32);
    const u64 dB = ((u64)((BN / 8 * 128) >> 4) << 16) | ((u64)(128 >> 4) << 32);
    float acc[NACC];
    int h = 0;  // the half-block step, over this CTA's tiles
    for (int tl = 0; tl < my_tiles; ++tl) {
      const int tt = blockIdx.x + tl * gridDim.x, m0 = (tt % mtiles) * BM;
      mc = M - m0 < BM ? M - m0 : BM;
      const bool active = 64 * c < mc;  // rows past M: wait and release, no wgmmas
#pragma unroll
      for (int j = 0; j < NACC; ++j) acc[j] = 0.f;
      for (int hl = 0; hl < 2 * bps; ++hl, ++h) {
        const int s = h % STAGES;
        mbar_wait(FULL(s), (h / STAGES) & 1);
        if (active) {
          fence_proxy_async();  // the cp.async x tile (generic proxy) -> the wgmmas
          const u32 at = a_ring + s * A_BYTES + c * 8 * 128, bt = b_ring + s * B_BYTES;
          keep(acc);
          wg_fence();
#pragma unroll
          for (int kt = 0; kt < 4; ++kt) {
            const u64 da = dA | (u64)(((at + 2 * kt * (BM / 8) * 128) & 0x3FFFFu) >> 4);
            const u64 db = dB | (u64)(((bt + 2 * kt * (BN / 8) * 128) & 0x3FFFFu) >> 4);
            wgmma(acc, da, db);
          }
          wg_commit();
          keep(acc);
          wg_wait<1>();
          keep(acc);
        }
        if (hl > 0) bar_arrive(EMPTY((h - 1) % STAGES));
      }
      wg_wait<0>();
      keep(acc);
      bar_arrive(EMPTY((h - 1) % STAGES));  // the tile's last stage: the producer may run on into the next tile
#if SPLIT == 1
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = rl + 8 * hh;
        if (row < mc) {
          u16* orow = out + (u64)(m0 + row) * stride_om + (tt / mtiles) * BN + 2 * t;
#pragma unroll
          for (int j = 0; j < BN / 8; ++j)
            *(u32*)(orow + 8 * j) = (u32)f2h(acc[4 * j + 2 * hh]) | ((u32)f2h(acc[4 * j + 2 * hh + 1]) << 16);
        }
      }
#endif
    }
#if SPLIT > 1
    // one tile a CTA (gridDim.x = the tiles): its sums go over the idle rings
    asm volatile("bar.sync 2, %0;" :: "n"(128 * NCONS) : "memory");  // every consumer's wgmmas are done with the rings
    const u32 fin = sbase;  // [BM][FSTR] floats
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
#pragma unroll
      for (int j = 0; j < BN / 8; ++j)
        asm volatile("st.shared.v2.f32 [%0], {%1, %2};" :: "r"(fin + ((rl + 8 * hh) * FSTR + 8 * j + 2 * t) * 4),
                     "f"(acc[4 * j + 2 * hh]), "f"(acc[4 * j + 2 * hh + 1]) : "memory");
#endif
  }
#if SPLIT > 1
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  {  // CTA `ks` of the cluster sums its share of the column pairs over the cluster's CTAs, in rank order
    const int m0 = (blockIdx.x % mtiles) * BM, n0 = (blockIdx.x / mtiles) * BN;
    mc = M - m0 < BM ? M - m0 : BM;
    const int total = mc * (BN / 2), share = (total + SPLIT - 1) / SPLIT;
    const int lo = ks * share, hi = lo + share < total ? lo + share : total;
    for (int i = lo + tid; i < hi; i += NTHREADS) {
      const int row = i / (BN / 2), col = 2 * (i % (BN / 2));
      const u32 local = sbase + (row * FSTR + col) * 4;
      float s0 = 0.f, s1 = 0.f;
#pragma unroll
      for (int r = 0; r < SPLIT; ++r) {
        u32 remote;
        float v0, v1;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(r));
        asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];" : "=f"(v0), "=f"(v1) : "r"(remote) : "memory");
        s0 += v0;
        s1 += v1;
      }
      *(u32*)(out + (u64)(m0 + row) * stride_om + n0 + col) = (u32)f2h(s0) | ((u32)f2h(s1) << 16);
    }
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
""")


def ws_kernel_source(spec: WsSpec) -> str:
    """The CUDA C++ text of `fg_gptq_ws` for `spec` (no headers; compile for sm_90a).

    Example:
        >>> src = ws_kernel_source(WsSpec(bf16=False, zero_v1=True, bm=128, bn=256, split=2))
        >>> "m64n256k16.f32.f16.f16" in src and "#define SPLIT 2" in src
        True
    """
    return _SOURCE.substitute(
        bf16=int(spec.bf16), zero_v1=int(spec.zero_v1), bm=spec.bm, bn=spec.bn, split=spec.split,
        stages=spec.stages, rstages=spec.rstages, nprod=spec.nprod, helpers=HELPERS,
        scaled_dequant=SCALED_DEQUANT, wgmma_asm=_wgmma_asm(spec.bn, spec.bf16), ws_device=WS_DEVICE,
        **_layout(spec.bm, spec.bn, spec.split, spec.stages, spec.rstages),
    )  # fmt: skip
