"""The tensor cores' rate for one `wgmma.mma_async.m64nNk16` (f32 += f16·f16) on this GPU, by operand source.

`python benchmarks/wgmma_rate.py`: a CTA of W warpgroups an SM (one CTA an SM, 132 CTAs), each warpgroup issuing
ITERS wgmmas back to back on its own accumulators (one group in flight), no global memory. Modes:
- "RS": A (64 x 16) from registers, B (16 x N) from shared memory: the GPTQ kernel's form (A = dequantized W);
- "SS": A and B from shared memory (no swizzle, K-major core matrices);
- "RS+dq": RS, with A dequantized before each wgmma from a word read from shared memory (a load, a shift, and a
  lop3, f16x2 subtract and multiply a pair: about the GPTQ consumer's instructions a step), in two register sets
  (one wgmma group in flight while the next step is dequantized); "RS+dq4": four sets, three groups in flight;
- "SS+st": SS, and before each wgmma the warpgroup writes a fresh 16 x N B tile (N·32 bytes, 16-byte stores, two
  buffers) and fences it for the async proxy: what a kernel that dequantizes W into shared memory pays.
Each warpgroup times its loop with clock64; the line gives SM cycles a wgmma (the slowest warpgroup's cycles / the
SM's wgmmas) against the tensor cores' dense peak (N/2 cycles: 2048 FMA a cycle an SM). Writes $OUT/wgmma_rate.txt.
The data are whatever shared memory holds: the results are not used, only the time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ITERS = 2048

_SRC = r"""
typedef unsigned int u32;
typedef unsigned long long u64;
#define N %(n)d
#define NACC (N / 2)
#define MODE %(mode)d  // 0 RS, 1 SS, 2 SS + a B tile stored before each wgmma, 3 RS with A dequantized from a word
#define INFL %(infl)d  // MODE 3: A register sets, and wgmma groups kept in flight (else 2)
__device__ __forceinline__ u32 dq(u32 w, u32 mask, u32 z, u32 s) {  // a pair (q - z)·s by magic numbers, as GPTQ does
  u32 v, d;
  asm volatile("lop3.b32 %%0, %%1, %%2, %%3, 0xea;" : "=r"(v) : "r"(w), "r"(mask), "r"(0x64006400u));
  asm volatile("sub.f16x2 %%0, %%1, %%2;" : "=r"(d) : "r"(v), "r"(z));
  asm volatile("mul.f16x2 %%0, %%1, %%2;" : "=r"(v) : "r"(d), "r"(s));
  return v;
}
__device__ __forceinline__ u64 desc_of(u32 addr, u32 lbo, u32 sbo) {  // no swizzle, K-major core matrices
  return (u64)((addr & 0x3FFFFu) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32);
}
extern "C" __global__ void __launch_bounds__(%(threads)d, 1) wgmma_rate(long long* cycles, int iters) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
  const u32 base = (u32)__cvta_generic_to_shared(smem) + wg * (2048 + 2 * N * 32);
  const u32 a_s = base, b_s = base + 2048;  // A: 8 row groups x 2 k groups of 128 B; B: two N x 16 tiles
  float d[NACC];
#pragma unroll
  for (int i = 0; i < NACC; ++i) d[i] = 0.f;
#pragma unroll
  for (int i = 0; i < NACC; ++i) asm volatile("" : "+f"(d[i]) :: "memory");  // pinned across the async wgmmas
  u32 a0 = tid, a1 = tid * 3u, a2 = tid * 5u, a3 = tid * 7u;
  const u64 da = desc_of(a_s, 128, 256);
  asm volatile("bar.sync 0;" ::: "memory");
  const long long t0 = clock64();
  u32 a[INFL][4];  // MODE 3: a step's A is written while the INFL - 1 steps before may still read theirs
#pragma unroll %(infl)d
  for (int it = 0; it < iters; ++it) {
    const u32 bt = b_s + (MODE == 2 ? (it & 1) * N * 32 : 0);
#if MODE == 3
    {  // this step's word from shared memory, its 4 pairs dequantized (about as many instructions as the GPTQ consumer)
      u32 w;
      asm volatile("ld.shared.u32 %%0, [%%1];" : "=r"(w) : "r"(b_s + ((it * 4 + tid) & 255) * 4));
      const u32 hi = w >> 8, z = 0x64086408u + (it & 1), sc = 0x3c003c00u;
      a[it %% INFL][0] = dq(w, 0x000f000fu, z, sc);
      a[it %% INFL][1] = dq(w, 0x00f000f0u, z, sc);
      a[it %% INFL][2] = dq(hi, 0x000f000fu, z, sc);
      a[it %% INFL][3] = dq(hi, 0x00f000f0u, z, sc);
    }
#endif
#if MODE == 2
    for (int c = tid; c < N * 2; c += 128) {  // the tile's 16-byte rows
      asm volatile("st.shared.v4.u32 [%%0], {%%1, %%2, %%3, %%4};" :: "r"(bt + c * 16), "r"(a0 + it), "r"(a1), "r"(a2), "r"(a3) : "memory");
    }
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    asm volatile("bar.sync %%0, 128;" :: "r"(wg + 1) : "memory");
#endif
    const u64 db = desc_of(bt, 128, 256);
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#if MODE == 0
    asm volatile("wgmma.mma_async.sync.aligned.m64n%(n)dk16.f32.f16.f16 {%(regs)s}, {%(a)s}, %%%(dpos)d, 1, 1, 1, 0;\n"
                 : %(outs)s : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
#elif MODE == 3
    asm volatile("wgmma.mma_async.sync.aligned.m64n%(n)dk16.f32.f16.f16 {%(regs)s}, {%(a)s}, %%%(dpos)d, 1, 1, 1, 0;\n"
                 : %(outs)s : "r"(a[it %% INFL][0]), "r"(a[it %% INFL][1]), "r"(a[it %% INFL][2]), "r"(a[it %% INFL][3]), "l"(db));
#else
    asm volatile("wgmma.mma_async.sync.aligned.m64n%(n)dk16.f32.f16.f16 {%(regs)s}, %%%(apos)d, %%%(dpos2)d, 1, 1, 1, 0, 0;\n"
                 : %(outs)s : "l"(da), "l"(db));
#endif
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned %%0;" :: "n"(INFL - 1) : "memory");
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
  for (int i = 0; i < NACC; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
  const long long t1 = clock64();
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < NACC; ++i) s += d[i];
  if (tid == 0) cycles[blockIdx.x * 8 + wg] = (t1 - t0) + (s == 12345.f ? 1 : 0);
}
"""


def source(n: int, mode: int, wgs: int, infl: int = 2) -> str:
    """The kernel text for N = `n`, MODE `mode`, `wgs` warpgroups; MODE 3 keeps `infl` wgmma groups in flight."""
    nacc = n // 2
    return _SRC % {
        "n": n,
        "mode": mode,
        "infl": infl if mode == 3 else 2,
        "threads": 128 * wgs,
        "regs": ", ".join(f"%{i}" for i in range(nacc)),
        "a": ", ".join(f"%{nacc + i}" for i in range(4)),
        "dpos": nacc + 4,
        "apos": nacc,
        "dpos2": nacc + 1,
        "outs": ", ".join(f'"+f"(d[{i}])' for i in range(nacc)),
    }


def main() -> int:
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    lines = [
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | {sms} SMs | {ITERS} wgmmas a warpgroup"
    ]
    modes = ((0, 2, "RS"), (3, 2, "RS+dq"), (3, 4, "RS+dq4"), (1, 2, "SS"), (2, 2, "SS+st"))
    for mode, infl, label in modes:
        for n in (16, 64, 128, 256):
            for wgs in (1, 2, 4):
                if n == 256 and wgs == 4:
                    continue  # 128 accumulators a thread at 512 threads: over the register file
                try:
                    kern = torch.cuda._compile_kernel(
                        source(n, mode, wgs, infl), "wgmma_rate", compute_capability="90a"
                    )
                except Exception as e:  # noqa: BLE001 - one shape that does not compile must not hide the rest
                    lines.append(f"{label:6} N={n:3} W={wgs}: compile failed {str(e)[:200]}")
                    continue
                smem = wgs * (2048 + 2 * n * 32)
                cyc = torch.zeros(sms * 8, dtype=torch.int64, device=dev)
                for _ in range(2):  # the second launch is the one read
                    kern(grid=(sms, 1, 1), block=(128 * wgs, 1, 1), shared_mem=smem, args=[cyc, ITERS])
                torch.cuda.synchronize()
                c = cyc.view(sms, 8)[:, :wgs].max(dim=1).values.double()
                per = float(c.median()) / (wgs * ITERS)
                lines.append(
                    f"{label:6} N={n:3} W={wgs}: {per:6.1f} SM cycles a wgmma (peak {n / 2:5.1f}: "
                    f"{n / 2 / per:4.0%}), {2 * 64 * n * 16 / per / 2:6.0f} FMA a cycle an SM"
                )
                print(lines[-1], flush=True)
    if out := os.environ.get("OUT"):
        Path(out, "wgmma_rate.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
