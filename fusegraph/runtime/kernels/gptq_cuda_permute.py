"""Act-order's column permutation of x, `y = x[:, perm]`, as one compiled CUDA kernel (`fg_permute_rows`).

GPTQ act-order runs the plain kernels on the row-sorted weight after x's columns are permuted once
(`gptq_cuda.maybe_gptq_cuda`). A gather straight from global memory (the Triton `_permute_cols_kernel`,
one element a lane) costs one L1 wavefront per element: at M = 1024, K = 14336 about 65 µs on an H200,
four times the bytes it moves. This kernel copies whole rows of x into shared memory with 16-byte
`cp.async`s (the next row's copy in flight while this one is gathered), gathers there (a random
2-byte read costs about 3-4 bank wavefronts per warp instead of 32 L1 ones), and writes y with
16-byte stores; a thread keeps the perm entries of its 8-column chunks in registers for all the rows
of its CTA. It executes `griddepcontrol.launch_dependents` at once (in the PDL chain right after its own
`griddepcontrol.wait`), so that a kernel launched after it with programmatic dependent launch
(`gptq_cuda_launch.launch(pdl=True)`) starts and streams its weights until its own wait. In the chain the first CTA
of each column slice asks L2 for the slice's perm before that wait (perm is a weight; H200, 2026-12-02: the
permutation alone 0.04-0.15 µs faster, down's act-order matmul at M=4 14.50-14.68 → 14.20-14.40 µs).

The grid (`permute_plan`): CTAs of 256 threads, each an output column slice of `CH`·2048 columns of
`rows` rows of x through a ring of up to 4 rows (as many as fit four CTAs an SM), about four CTAs an SM:
at small M the columns are split (each CTA copies the whole row, from L2 after the first), at large M
each CTA takes whole rows.
"""

from __future__ import annotations

from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_cuda_launch import KernelCache, launch
from fusegraph.runtime.kernels.pdl import pdl_mode

__all__ = ["PERMUTE_MAX_K", "gather_last_dim", "permute_plan", "permute_rows", "permute_rows_source"]

PERMUTE_ROWS_NAME = "fg_permute_rows"
PERMUTE_MAX_K = 32768  # two rows of x in shared memory: 128 KB
_THREADS = 256
_CACHE: KernelCache[tuple[int, int, bool, int, bool]] = KernelCache()  # by (device index, ch, vec, nb, chain)

_SOURCE = r"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
struct __attribute__((aligned(16))) u32x4 { u32 x, y, z, w; };
struct __attribute__((aligned(16))) i32x4 { int x, y, z, w; };
#define CH %(ch)d    // 8-column chunks a thread (its perm entries stay in registers)
#define VEC %(vec)d  // x 16-byte aligned, its row stride and K multiples of 8: 16-byte copies and stores
#define NB %(nb)d    // rows of x in the shared-memory ring (NB - 1 copies in flight while one is gathered)
#define NT 256
#define CHAIN %(chain)d  // a PDL launch itself (the runtime's chain, pdl.py): waits before its first read

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %%1; cvt.u32.u64 %%0, t; }" : "=r"(a) : "l"(p));
  return a;
}

extern "C" __global__ void __launch_bounds__(NT, CH <= 8 ? 4 : 1) fg_permute_rows(
    const u16* __restrict__ x, const int* __restrict__ perm, u16* __restrict__ y, int M, int K, int stride_xm,
    int rows, int cols) {
#if __CUDA_ARCH__ >= 900
  if (CHAIN && VEC && threadIdx.x == 0 && blockIdx.y == 0) {  // perm (a weight) to L2 while the kernels before run
    const int p0 = blockIdx.x * cols, p1 = min(K, p0 + cols);
    if (p1 > p0)
      asm volatile("cp.async.bulk.prefetch.L2.global [%%0], %%1;" :: "l"(perm + p0), "r"((u32)(p1 - p0) * 4) : "memory");
  }
  if (CHAIN) asm volatile("griddepcontrol.wait;" ::: "memory");  // the kernels before: x written, y free
  asm volatile("griddepcontrol.launch_dependents;");  // a PDL-launched kernel after this one may start now
#endif
  extern __shared__ __align__(16) u16 buf[];          // [NB][KP]: row r in buf[(r - r0) %% NB]
  const int KP = (K + 7) & ~7, tid = threadIdx.x;
  const int c0 = blockIdx.x * cols, r0 = blockIdx.y * rows;
  const int c1 = min(K, c0 + cols), r1 = min(M, r0 + rows);
  if (r0 >= r1) return;
  auto stage = [&](int r, int b) {  // row r of x to buffer b
    const u16* src = x + (u64)r * stride_xm;
    u16* dst = buf + b * KP;
    if (VEC) {
      for (int c = tid; c < K / 8; c += NT)
        asm volatile("cp.async.cg.shared.global [%%0], [%%1], 16;" :: "r"(smem_u32(dst + c * 8)), "l"(src + c * 8));
    } else {
      for (int c = tid; c < K; c += NT) dst[c] = src[c];
    }
  };
#pragma unroll
  for (int s = 0; s < NB - 1; ++s) {  // the ring's first NB - 1 rows in flight
    if (r0 + s < r1) stage(r0 + s, s);
    asm volatile("cp.async.commit_group;" ::: "memory");  // one group a row, empty past r1: uniform counts
  }
  u32 p[CH][4];  // perm of this thread's chunks (column c0 + 8 (tid + NT j) + e), two 16-bit entries a word
#pragma unroll
  for (int j = 0; j < CH; ++j) {  // loaded while the first row is copied
    const int c = c0 + 8 * (tid + NT * j);
#pragma unroll
    for (int e = 0; e < 4; ++e) p[j][e] = 0u;
    if (VEC && c + 8 <= c1) {
      const i32x4 a = *(const i32x4*)(perm + c), b = *(const i32x4*)(perm + c + 4);
      p[j][0] = (u32)a.x | ((u32)a.y << 16);
      p[j][1] = (u32)a.z | ((u32)a.w << 16);
      p[j][2] = (u32)b.x | ((u32)b.y << 16);
      p[j][3] = (u32)b.z | ((u32)b.w << 16);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (c + e < c1) p[j][e >> 1] |= (u32)perm[c + e] << (16 * (e & 1));
    }
  }
  for (int r = r0; r < r1; ++r) {
    const int b = (r - r0) %% NB, rn = r + NB - 1;
    if (rn < r1) stage(rn, (rn - r0) %% NB);  // into the buffer of row r - 1, read before the last barrier
    asm volatile("cp.async.commit_group;" ::: "memory");
    asm volatile("cp.async.wait_group %%0;" :: "n"(NB - 1) : "memory");  // row r's group is done
    __syncthreads();
    const u16* xs = buf + b * KP;
    u16* yr = y + (u64)r * K;
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c = c0 + 8 * (tid + NT * j);
      if (VEC && c + 8 <= c1) {
        u32x4 v;
        v.x = (u32)xs[p[j][0] & 0xffff] | ((u32)xs[p[j][0] >> 16] << 16);
        v.y = (u32)xs[p[j][1] & 0xffff] | ((u32)xs[p[j][1] >> 16] << 16);
        v.z = (u32)xs[p[j][2] & 0xffff] | ((u32)xs[p[j][2] >> 16] << 16);
        v.w = (u32)xs[p[j][3] & 0xffff] | ((u32)xs[p[j][3] >> 16] << 16);
        *(u32x4*)(yr + c) = v;
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e)
          if (c + e < c1) yr[c + e] = xs[(p[j][e >> 1] >> (16 * (e & 1))) & 0xffff];
      }
    }
    __syncthreads();  // buffer b is refilled from the next iteration on
  }
}
"""


def permute_rows_source(ch: int, vec: bool, nb: int = 2, chain: bool = False) -> str:
    """CUDA C++ source of `fg_permute_rows` with `ch` 8-column chunks a thread (1..16), 16-byte paths if `vec`,
    a ring of `nb` rows (1..8); `chain`: launched with PDL, it waits for the kernels before it first.

    Example:
        >>> "fg_permute_rows" in permute_rows_source(2, True)
        True
    """
    if not 1 <= ch <= 16:
        raise ValueError(f"permute_rows_source: ch must be in 1..16, got {ch}")
    if not 1 <= nb <= 8:
        raise ValueError(f"permute_rows_source: nb must be in 1..8, got {nb}")
    return _SOURCE % {"ch": ch, "vec": int(vec), "nb": nb, "chain": int(chain)}


def permute_plan(m: int, k: int, sms: int, per_sm: int = 4, stages: int | None = None) -> dict[str, int]:
    """The grid of `fg_permute_rows` for x `[m, k]` on `sms` SMs: {"ch", "cols", "rows", "nb", "grid_x", "grid_y",
    "smem"}. About `per_sm` CTAs an SM (default 4): the columns split in
    slices of ch·2048 (each CTA copies whole rows, so a slice re-reads the row from L2) while m·slices stays
    under that, then rows a CTA to fill it; a ring of `stages` rows (default: up to 4 that fit the CTAs an SM
    in 220 KB, at most its rows).

    Example:
        >>> permute_plan(1024, 14336, 132)
        {'ch': 7, 'cols': 14336, 'rows': 2, 'nb': 1, 'grid_x': 1, 'grid_y': 512, 'smem': 28672}
        >>> permute_plan(1, 4096, 132)
        {'ch': 1, 'cols': 2048, 'rows': 1, 'nb': 1, 'grid_x': 2, 'grid_y': 1, 'smem': 8192}
    """
    if m < 1 or not 1 <= k <= PERMUTE_MAX_K or sms < 1:
        raise ValueError(
            f"permute_plan: needs M ≥ 1, 1 ≤ K ≤ {PERMUTE_MAX_K}, SMs ≥ 1; got M={m} K={k} SMs={sms}"
        )
    row = (k + 7) // 8 * 8 * 2
    want = per_sm * sms
    chunks = (k + 7) // 8
    most = (chunks + _THREADS - 1) // _THREADS  # slices of one chunk a thread
    slices = max(1, min(most, want // m))
    ch = -(-chunks // (slices * _THREADS))
    cols = ch * 8 * _THREADS
    grid_x = -(-k // cols)
    rows = max(1, -(-m * grid_x // want))
    grid_y = -(-m // rows)
    nb = stages or max(1, min(rows, 4, 220 * 1024 // per_sm // row))
    return {
        "ch": ch,
        "cols": cols,
        "rows": rows,
        "nb": nb,
        "grid_x": grid_x,
        "grid_y": grid_y,
        "smem": nb * row,
    }


def _kernel(device: torch.device, ch: int, vec: bool, nb: int, smem: int, chain: bool) -> Any | None:
    """The compiled kernel (once), or None: no NVRTC, a compile error, or not compiled before a capture."""

    def build() -> Any:
        with torch.cuda.device(device):
            return torch.cuda._compile_kernel(permute_rows_source(ch, vec, nb, chain), PERMUTE_ROWS_NAME)

    return _CACHE.get((device.index or 0, ch, vec, nb, chain), build, smem)


def permute_rows(x: torch.Tensor, perm: torch.Tensor, sms: int | None = None, *, per_sm: int | None = None,
                 stages: int | None = None) -> torch.Tensor | None:  # fmt: skip
    """`x[:, perm]` as a new contiguous `[M, K]` tensor by `fg_permute_rows`, or None when it cannot run
    here (not fp16/bf16 on CUDA, K past `PERMUTE_MAX_K`, x's row stride not 1 in its columns, or the
    kernel not yet compiled during CUDA-graph capture: the caller then permutes another way).

    `perm` int32 `[K]`, every entry in 0..K-1 (not checked on the device). x may sit at any offset
    and row stride; 16-byte aligned x with a row stride and K multiples of 8 takes 16-byte copies.
    `per_sm` / `stages` override `permute_plan`'s CTAs an SM and ring depth (for benchmarks).

    Example:
        >>> y = permute_rows(x, perm)  # == x[:, perm.long()], bit for bit
    """
    if x.dim() != 2 or x.device.type != "cuda" or x.dtype not in (torch.float16, torch.bfloat16):
        return None
    m, k = x.shape
    if perm.shape != (k,) or perm.dtype != torch.int32 or perm.device != x.device:
        raise ValueError(f"permute_rows: perm must be int32 [{k}] on {x.device}, got {perm.dtype} "
                         f"{list(perm.shape)} on {perm.device}")  # fmt: skip
    if k > PERMUTE_MAX_K or (k > 1 and x.stride(1) != 1):
        return None
    y = torch.empty((m, k), dtype=x.dtype, device=x.device)
    if m == 0 or k == 0:
        return y
    if sms is None:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    plan = permute_plan(m, k, sms, per_sm or 4, stages)
    perm = perm.contiguous()
    stride = x.stride(0) if m > 1 else k
    vec = x.data_ptr() % 16 == 0 and stride % 8 == 0 and k % 8 == 0 and perm.data_ptr() % 16 == 0
    chain = pdl_mode(x.device) > 0  # a PDL launch in the runtime's chain (`pdl.py`)
    kern = _kernel(x.device, plan["ch"], vec, plan["nb"], plan["smem"], chain)
    if kern is None:
        return None
    launch(kern, (plan["grid_x"], plan["grid_y"], 1), (_THREADS, 1, 1), plan["smem"],
           [x, perm, y, m, k, stride, plan["rows"], plan["cols"]], pdl=chain)  # fmt: skip
    return y


def gather_last_dim(y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """`y[..., perm]` by `permute_rows` over y's rows, or aten's `index_select` where that cannot run (not fp16/bf16
    on CUDA, no NVRTC, a first capture). `permute_rows` does not mask: perm's values must already be checked.

    Example:
        >>> yp = gather_last_dim(y, perm)  # == y.index_select(-1, perm.long())
    """
    y2 = y.reshape(-1, y.shape[-1])
    yp = permute_rows(y2, perm)
    return (y2.index_select(1, perm.long()) if yp is None else yp).reshape(y.shape)
