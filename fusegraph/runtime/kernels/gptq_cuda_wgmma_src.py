"""CUDA C++ source of the Hopper wgmma GPTQ kernel (`gptq_cuda_wgmma.py` compiles it with NVRTC for sm_90a).

`fg_gptq_wgmma` multiplies x `[M, K]` (fp16 or bf16) by a plain 4-bit W in the tiled layout of
`fg.gptq.repack` (`gptq_cuda_src.py`'s docstring) with `wgmma.mma_async.m64nNk16` (f32 accumulate):

- A CTA is one warpgroup (4 warps); warp w takes the 64-column strip 4·blockIdx.x + w, one K slice
  (`bps` blocks, blockIdx.y of SPLIT) and one chunk of TOK = 8·MT ≤ 64 rows of x (blockIdx.z).
- A = W^T from registers: a lane loads and dequantizes exactly as the mid-M kernel
  (`gptq_cuda_mid.py`: lop3 magic numbers, scale folded into each pair), and the four registers of
  column group i (columns 4g + i and 32 + 4g + i of its warp's strip, rows 2t.., 2t + 8.. of the
  16-row step) are the wgmma A fragment of warp w's 16 rows: so one wgmma (m64, four strips' group
  i) a column group and 16-row step, four a step.
- B = x^T `[16, TOK]` from shared memory through a matrix descriptor, K-major, no swizzle: x's block
  (TOK rows × 128) is staged (cp.async, three buffers) as 8×8 core matrices of 128 contiguous bytes,
  core matrix (k chunk c, row group r) at (c·MT + r)·128, row m of it at +16·(m % 8); so the
  descriptor's leading byte offset (the next 8 values of K) is MT·128 and its stride byte offset
  (the next 8 rows) is 128. Rows past M stay zero.
- Each step's four wgmmas form one commit group; `wgmma.wait_group 1` keeps one step in flight
  while the next is dequantized, also across blocks: block u + 1 is staged into the buffer that
  block u − 2 read, whose wgmmas are complete by then (three buffers, one barrier a block).
- Epilogue: the accumulators (the m64nN layout: row 16w + g (+8), column 8j + 2t (+1)) go to shared
  memory ([TOK][256] fp32), then to the output (SPLIT = 1) or, split-K, summed over the SPLIT CTAs
  of a thread-block cluster through distributed shared memory, in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusegraph.runtime.kernels.gptq_cuda_ptx import HELPERS, SCALED_DEQUANT

__all__ = ["WGMMA_KERNEL_NAME", "WgmmaSpec", "wgmma_kernel_source", "wgmma_smem_bytes"]

WGMMA_KERNEL_NAME = "fg_gptq_wgmma"


@dataclass(frozen=True)
class WgmmaSpec:
    """The compile-time parameters of one wgmma kernel instance (plain 4-bit only).

    Attributes:
        bf16: x, scales and output are bf16, else fp16.
        mt: row groups of 8 in a chunk of x, 1..8 (TOK = 8·mt rows a CTA; the wgmma's N).
        split: CTAs along K per strip group (gridDim.y); > 1 reduces through a cluster (≤ 8).
        zero_v1: the qzeros store z − 1.
    """

    bf16: bool
    mt: int
    split: int
    zero_v1: bool

    def __post_init__(self) -> None:
        if not 1 <= self.mt <= 8:
            raise ValueError(f"gptq_cuda_wgmma: mt must be 1..8, got {self.mt}")
        if not 1 <= self.split <= 8:
            raise ValueError(f"gptq_cuda_wgmma: split must be 1..8 (a cluster), got {self.split}")


def wgmma_smem_bytes(spec: WgmmaSpec) -> int:
    """Dynamic shared memory of one CTA: three staged blocks of x, or (after the loop) its [TOK][256] sums."""
    return max(3 * 16 * spec.mt * 128, 8 * spec.mt * 256 * 4)


def _wgmma_asm(mt: int, bf16: bool) -> str:
    """The inline-asm statement of one `wgmma.mma_async.m64n{8·mt}k16` with A from registers."""
    n = 8 * mt
    nacc = n // 2
    regs = ", ".join(f"%{i}" for i in range(nacc))
    a = ", ".join(f"%{nacc + i}" for i in range(4))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(nacc))
    ty = "bf16" if bf16 else "f16"
    return (
        f'asm volatile("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {{{regs}}}, {{{a}}}, %{nacc + 4}, '
        f'1, 1, 1, 0;\\n" : {outs} : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc));'
    )


_SOURCE = r"""
#define BITS 4
#define BF16 %(bf16)d
#define MT %(mt)d
#define TOK (8 * MT)
#define NACC (4 * MT)  // accumulators a thread, per column group
#define SPLIT %(split)d
#define ZERO_V1 %(zero_v1)d
#define CW 256  // the CTA's output columns: 4 strips of 64
%(helpers)s%(scaled_dequant)s__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %%0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ void keep(float* d) {  // pin the accumulators across the async wgmmas
#pragma unroll
  for (int i = 0; i < NACC; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
}
__device__ __forceinline__ void wgmma(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u64 desc) {
  %(wgmma_asm)s
}

extern "C" __global__ void
#if SPLIT > 1
__cluster_dims__(1, SPLIT, 1)
#endif
__launch_bounds__(128, 1)
fg_gptq_wgmma(const u16* __restrict__ x, const u32x4* __restrict__ qw, const u16* __restrict__ sc,
              const u32* __restrict__ qz, u16* __restrict__ out, int M, int N, int K, int group_size, int bps,
              int stride_xm, int stride_s, int stride_qz, int stride_om) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int cta = blockIdx.x, ks = blockIdx.y, m0 = blockIdx.z * TOK;
  const int mc = M - m0 < TOK ? M - m0 : TOK;  // rows of x this CTA takes
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int strip = cta * 4 + warp, kb0 = ks * bps;
  float* fin = (float*)smem;  // after the loop: [mc][CW] sums
  const u32 xs0 = smem_u32(smem);  // [3][16 k chunks][MT row groups][8 rows][16 B]
  const u32x4* wsrc = qw + (u64)strip * (K / P) * 16 + t * 16 + g;
  const u16* ssrc = sc + strip * 64 + 4 * g;
  const u32* zsrc = qz + strip * 8 + (g >> 1);
  const int zshift = 16 * (g & 1);
  const u16* xrow = x + (u64)m0 * stride_xm;

  auto stage = [&](int u) {  // x's rows of block kb0 + u into buffer u %% 3, 16-byte chunks of 8 values
    const u32 dst = xs0 + (u %% 3) * (16 * TOK * 16);
    const int kbase = (kb0 + u) * 128;
    for (int c = tid; c < mc * 16; c += 128) {
      const int m = c >> 4, cc = c & 15;
      cp16(dst + (cc * MT + (m >> 3)) * 128 + (m & 7) * 16, xrow + (u64)m * stride_xm + kbase + cc * 8);
    }
  };
  u32x4 w[NW];
  u32x2 sx, sy;
  u32 zx, zy;
  auto load_words = [&](int blk, int q) {
    const u32x4* src = wsrc + (u64)blk * R * 16 + q * 64;
    w[2 * q] = ldg_stream(src);
    w[2 * q + 1] = ldg_stream(src + 8);
  };
  auto load_meta = [&](int blk) {
    const int grp = group_size == 128 ? blk : blk * 128 / group_size;
    const u16* sp = ssrc + (u64)grp * stride_s;
    sx = ldg8(sp);
    sy = ldg8(sp + 32);
    const u32* zp = zsrc + (u64)grp * stride_qz;
    zx = ldg4(zp);
    zy = ldg4(zp + 4);
  };

  stage(0);
  cp_commit();
#pragma unroll
  for (int q = 0; q < NQ; ++q) load_words(kb0, q);
  load_meta(kb0);
  for (int i = tid; i < 3 * 16 * (TOK - mc); i += 128) {  // the rows past M of the three buffers: zero
    const int b = i / (16 * (TOK - mc)), r = i - b * 16 * (TOK - mc);
    const int m = mc + r / 16, cc = r %% 16;
    u32* p = (u32*)(smem + b * (16 * TOK * 16) + (cc * MT + (m >> 3)) * 128 + (m & 7) * 16);
    p[0] = p[1] = p[2] = p[3] = 0u;
  }

  float acc[4][NACC];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int c = 0; c < NACC; ++c) acc[i][c] = 0.f;
  // descriptor: start >> 4 (bits 0-13), leading byte offset >> 4 (16-29), stride byte offset >> 4 (32-45)
  const u64 dconst = ((u64)((MT * 128) >> 4) << 16) | ((u64)(128 >> 4) << 32);

  for (int u = 0; u < bps; ++u) {
    cp_wait<0>();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // cp.async writes -> wgmma reads
    __syncthreads();
    const bool more = u + 1 < bps;
    if (more) {
      stage(u + 1);
      cp_commit();
    }
    u32 mz[4][2], nzh[4][2], s2[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const u32 zw = h ? zy : zx;
        const u32 z = (zw >> (zshift + 4 * i)) & 15u;
#if BF16
        mz[i][h] = z * 0x10001u + (0x4300u + ZERO_V1) * 0x10001u;
        nzh[i][h] = 0u;
#else
        mz[i][h] = z * 0x10001u + (0x6400u + ZERO_V1) * 0x10001u;
        nzh[i][h] = sub2(0x63806380u, mz[i][h]);
#endif
        const u32 sw = h ? (i < 2 ? sy.x : sy.y) : (i < 2 ? sx.x : sx.y);
        s2[i][h] = prmt(sw, 0u, (i & 1) ? 0x3232u : 0x1010u);
      }
    if (more) load_meta(kb0 + u + 1);
    const u32 xb = xs0 + (u %% 3) * (16 * TOK * 16);
#pragma unroll
    for (int qq = 0; qq < NQ / 2; ++qq) {
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const int kt = j * (NQ / 2) + qq;  // the 16-row step: k chunks 2kt, 2kt + 1
        const u64 desc = dconst | (u64)(((xb + 2 * kt * MT * 128) & 0x3FFFFu) >> 4);
        u32 a[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#define DQ(J) { a[i][0] = dq<J>(comp(w[4 * qq], i), mz[i][0], nzh[i][0], s2[i][0]); \
                a[i][1] = dq<J>(comp(w[4 * qq + 1], i), mz[i][1], nzh[i][1], s2[i][1]); \
                a[i][2] = dq<J>(comp(w[4 * qq + 2], i), mz[i][0], nzh[i][0], s2[i][0]); \
                a[i][3] = dq<J>(comp(w[4 * qq + 3], i), mz[i][1], nzh[i][1], s2[i][1]); }
          if (j == 0) DQ(0) else if (j == 1) DQ(1) else if (j == 2) DQ(2) else DQ(3)
#undef DQ
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) keep(acc[i]);
        wg_fence();
#pragma unroll
        for (int i = 0; i < 4; ++i) wgmma(acc[i], a[i][0], a[i][1], a[i][2], a[i][3], desc);
        wg_commit();
#pragma unroll
        for (int i = 0; i < 4; ++i) keep(acc[i]);
        wg_wait<1>();
      }
      if (more) {
        load_words(kb0 + u + 1, 2 * qq);
        load_words(kb0 + u + 1, 2 * qq + 1);
      }
    }
  }
  wg_wait<0>();
#pragma unroll
  for (int i = 0; i < 4; ++i) keep(acc[i]);
  __syncthreads();  // every warp is done with the x buffers: they become fin
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int jt = 0; jt < MT; ++jt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = 8 * jt + 2 * t + (c & 1);
        if (m < mc) fin[m * CW + warp * 64 + (c >> 1) * 32 + 4 * g + i] = acc[i][4 * jt + c];
      }
  __syncthreads();
  const int total = mc * CW, col0 = cta * CW;
  u16* orow = out + (u64)m0 * stride_om + col0;
#if SPLIT == 1
  for (int i = tid; i < total; i += 128) orow[(u64)(i / CW) * stride_om + i %% CW] = f2h(fin[i]);
#else
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  {  // CTA `ks` of the cluster sums its share of the outputs over the cluster's CTAs, in rank order
    const int share = (total + SPLIT - 1) / SPLIT;
    const int lo = ks * share, hi = lo + share < total ? lo + share : total;
    for (int i = lo + tid; i < hi; i += 128) {
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
      orow[(u64)(i / CW) * stride_om + i %% CW] = f2h(s);
    }
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
"""


def wgmma_kernel_source(spec: WgmmaSpec) -> str:
    """The CUDA C++ text of `fg_gptq_wgmma` for `spec` (no headers; compile for sm_90a).

    Example:
        >>> src = wgmma_kernel_source(WgmmaSpec(bf16=False, mt=8, split=4, zero_v1=True))
        >>> "m64n64k16.f32.f16.f16" in src and "#define SPLIT 4" in src
        True
    """
    return _SOURCE % {
        "bf16": int(spec.bf16),
        "mt": spec.mt,
        "split": spec.split,
        "zero_v1": int(spec.zero_v1),
        "helpers": HELPERS,
        "scaled_dequant": SCALED_DEQUANT,
        "wgmma_asm": _wgmma_asm(spec.mt, spec.bf16),
    }
