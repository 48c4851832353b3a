"""The toolkit of `gptq_cuda_probe.py`: the small-M kernel's ablated texts, the floor kernels, parallel
NVRTC compiles, the specs the dispatcher would build, one ablated launch, and the checked timing.

An ablation cuts one stage out of `fg_gptq_small_m`'s text (its results are wrong by design: timed only):
`noreduce` (no cross-warp or split-K sum), `nox` (x not staged), `nocompute` (the words xor-ed instead of
dequantized and multiplied), `nodeq` (the words straight to the mma), `nomma` (dequantized, xor-ed).
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gpu import graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_cuda as C  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_launch import raise_smem_limit  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_mid import MID_KERNEL_NAME, MidSpec, mid_kernel_source  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_ptx import EPILOGUE, HELPERS  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_src import KERNEL_NAME, KernelSpec, kernel_source, smem_bytes  # noqa: E402
from fusegraph.runtime.kernels.gptq_plan import cuda_plan  # noqa: E402
from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul  # noqa: E402

LINES: list[str] = []
T0 = time.time()
BUDGET_S = float(os.environ.get("PROBE_BUDGET_S", "1e9"))
SMS = 132


def log(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


class K:
    tiled = staticmethod(gptq_tiled_matmul)


# ---- ablations of the small-M kernel's text ------------------------------------------------------------

_SINK = """  u32 sink = 0u;
  auto consume = [&](const Blk& bk) {  // probe: the words xor-ed, no math
#pragma unroll
    for (int q = 0; q < NW; ++q) sink ^= bk.w[q].x ^ bk.w[q].y ^ bk.w[q].z ^ bk.w[q].w;
    sink ^= bk.sx.x ^ bk.sy.y ^ bk.zx ^ bk.zy;
  };
  // NBUF register buffers"""


def _edit(src: str, old: str, new: str) -> str:
    if old not in src:
        raise AssertionError(f"probe edit: {old[:60]!r} not in the kernel text")
    return src.replace(old, new)


def _noreduce(src: str) -> str:
    return _edit(src, EPILOGUE, "\n  if (ks == 0 && tid < 64) out[strip * 64 + tid] = f2h(red[tid]);\n}\n")


def _nox(src: str) -> str:
    return _edit(
        src, "cp16(smem_u32(xs + m * xstride + cc * 4), x + (u64)m * stride_xm + kb0 * 128 + cc * 8);", ";"
    )


def _nocompute(src: str) -> str:
    src = _edit(src, "  // NBUF register buffers", _SINK)
    src = _edit(src, "compute(bb[s], u + s);", "consume(bb[s]);")
    return _edit(src, "= acc[i][mt][c];", "= acc[i][mt][c] + (sink == 0x9e3779b9u ? 1.f : 0.f);")


def _nodeq(src: str) -> str:  # the words go to the mma as they are (no dequantization)
    for a in range(4):
        old = (
            f"dequant(comp(bk.w[4 * qq{f' + {a}' if a else ''}], i), mz[i][{a % 2}], nzh[i][{a % 2}], d{a});"
        )
        src = _edit(
            src,
            old,
            f"for (int j = 0; j < NJ; ++j) d{a}[j] = comp(bk.w[4 * qq{f' + {a}' if a else ''}], i) ^ j;",
        )
    return src


def _nomma(src: str) -> str:  # dequantized, but xor-ed into the sums instead of multiplied
    old = "mma(cb[i][mt], d0[j], d1[j], d2[j], d3[j], bf[j * (NQ / 2) + qq][mt][0], bf[j * (NQ / 2) + qq][mt][1]);"
    new = "cb[i][mt][0] += __uint_as_float((d0[j] ^ d1[j] ^ d2[j] ^ d3[j] ^ bf[j * (NQ / 2) + qq][mt][0]) & 0x3fffffffu);"
    return _edit(src, old, new)


EDITS: dict[str, Callable[[str], str]] = {"noreduce": _noreduce, "nox": _nox, "nocompute": _nocompute,
                                          "nodeq": _nodeq, "nomma": _nomma}  # fmt: skip

FLOOR_SRC = (
    "#define BITS 4\n#define BF16 0\n"
    + HELPERS
    + r"""
extern "C" __global__ void fg_null(u32* out) { if (threadIdx.x == 0 && blockIdx.x == 1u << 30) out[0] = 1u; }
extern "C" __global__ void __launch_bounds__(256) fg_read(const u32x4* __restrict__ p, u32* out, int per_cta, int unroll) {
  const u32x4* base = p + (u64)blockIdx.x * per_cta;
  u32 s = 0u;
  const int step = blockDim.x;
  if (unroll == 8) {
    for (int i = threadIdx.x; i < per_cta; i += 8 * step) {
      u32x4 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) if (i + j * step < per_cta) v[j] = ldg_stream(base + i + j * step); else v[j] = u32x4{0u, 0u, 0u, 0u};
#pragma unroll
      for (int j = 0; j < 8; ++j) s ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
    }
  } else {
    for (int i = threadIdx.x; i < per_cta; i += 4 * step) {
      u32x4 v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) if (i + j * step < per_cta) v[j] = ldg_stream(base + i + j * step); else v[j] = u32x4{0u, 0u, 0u, 0u};
#pragma unroll
      for (int j = 0; j < 4; ++j) s ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
    }
  }
  if (s == 0x9e3779b9u) out[blockIdx.x] = s;
}
extern "C" __global__ void __launch_bounds__(128) fg_permute(const u16* __restrict__ x, const int* __restrict__ perm,
                                                             u16* __restrict__ y, int K, int stride_xm) {
  const int c = (blockIdx.x * 128 + threadIdx.x) * 8, m = blockIdx.y;  // 8 columns a thread
  if (c >= K) return;
  const i32x4 p0 = *(const i32x4*)(perm + c), p1 = *(const i32x4*)(perm + c + 4);
  const u16* xr = x + (u64)m * stride_xm;
  u32x4 v;
  v.x = (u32)__ldg(xr + p0.x) | ((u32)__ldg(xr + p0.y) << 16);
  v.y = (u32)__ldg(xr + p0.z) | ((u32)__ldg(xr + p0.w) << 16);
  v.z = (u32)__ldg(xr + p1.x) | ((u32)__ldg(xr + p1.y) << 16);
  v.w = (u32)__ldg(xr + p1.z) | ((u32)__ldg(xr + p1.w) << 16);
  *(u32x4*)(y + (u64)m * K + c) = v;
}
"""
)

Spec = KernelSpec | MidSpec
_PROBES: dict[tuple[Spec, tuple[str, ...]], Any] = {}
FLOOR: dict[str, Any] = {}


def _source(key: tuple[Spec, tuple[str, ...]]) -> tuple[str, str]:
    spec, edits = key
    if isinstance(spec, MidSpec):
        return mid_kernel_source(spec), MID_KERNEL_NAME
    src = kernel_source(spec)
    for e in edits:
        src = EDITS[e](src)
    return src, KERNEL_NAME


def _nvrtc(src_name: tuple[str, str]) -> tuple[bytes, str]:
    """NVRTC alone (no CUDA context needed, so it runs in a worker thread)."""
    from torch.cuda._utils import _nvrtc_compile

    ptx, mangled = _nvrtc_compile(*src_name)
    return ptx, mangled


def _load(ptx: bytes, mangled: str) -> Any:
    """The module loaded in this (the main) thread, where torch's CUDA context is current."""
    from torch.cuda._utils import _cuda_load_module

    mod = _cuda_load_module(ptx, [mangled])
    return mod[mangled] if isinstance(mod, dict) else getattr(mod, mangled)


def compile_all(sources: list[tuple[str, str]]) -> list[Any]:
    """(source, kernel name) pairs compiled by NVRTC in parallel threads, the modules loaded here; on any
    trouble with torch's private helpers, one `torch.cuda._compile_kernel` at a time."""
    try:
        with ThreadPoolExecutor(12) as pool:
            return [_load(ptx, mangled) for ptx, mangled in pool.map(_nvrtc, sources)]
    except Exception as e:  # noqa: BLE001 - fall back to the public path
        log(f"  (parallel compile failed: {type(e).__name__}: {str(e)[:200]}; compiling one at a time)")
        return [torch.cuda._compile_kernel(src, name) for src, name in sources]


def precompile(keys: list[tuple[Spec, tuple[str, ...]]]) -> None:
    """NVRTC compiles in parallel threads, the modules load here; production specs (no edits) go where
    `gptq_cuda` looks for them. Any trouble with torch's private helpers: one `_compile_kernel` at a time."""
    todo = [k for k in dict.fromkeys(keys) if k not in _PROBES and (k[1] or (0, k[0]) not in C._KERNELS)]
    t = time.time()
    kerns = compile_all([_source(key) for key in todo])
    for (spec, edits), kern in zip(todo, kerns, strict=True):
        if edits and isinstance(spec, KernelSpec):
            _PROBES[(spec, edits)] = kern
        else:
            C._KERNELS[(0, spec)] = kern
    log(f"  (compiled {len(todo)} kernels in {time.time() - t:.1f} s)")


def spec_of(m: int, k: int, bits: int, plan: dict[str, Any], perm: bool = False) -> Spec:
    """The spec `gptq_cuda_matmul` builds for this plan (fp16, v1 zeros, sm_90)."""
    split = int(plan["split_k"])
    if plan.get("mid"):
        return MidSpec(bits=bits, bf16=False, mt=(m + 7) // 8, warps=int(plan["warps"]), split=split,
                       cluster=bool(plan["cluster"]) and split > 1, has_perm=perm, zero_v1=True,
                       min_blocks=int(plan.get("min_blocks", 1)), bufs=int(plan.get("bufs", 1)))  # fmt: skip
    return KernelSpec(bits=bits, bf16=False, mt=1 if m <= 8 else 2, warps=int(plan["warps"]), split=split,
                      cluster=bool(plan["cluster"]) and split > 1, has_perm=perm, zero_v1=True,
                      min_blocks=int(plan.get("min_blocks", 2)), bufs=int(plan.get("bufs", 2)))  # fmt: skip


def launch_probe(spec: KernelSpec, edits: tuple[str, ...], lay: Any, x: torch.Tensor) -> torch.Tensor:
    """One launch of an ablated kernel with `gptq_cuda_matmul`'s arguments (its output is not checked)."""
    r = lay.r
    qw, sc, qz = r["qweight"], lay.t["scales"], r["qzeros"]
    m, k = x.shape
    n = qw.shape[0] * 64
    bps = k // 128 // spec.split
    smem = smem_bytes(spec, m, bps)
    kern = _PROBES[(spec, edits)]
    if smem > 48 * 1024 - 1:
        raise_smem_limit(kern, smem)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    ticket = spec.split > 1 and not spec.cluster
    ws = torch.empty((spec.split, m, n), dtype=torch.float32, device=x.device) if ticket else out
    cnt = C._counters(x.device, n // 64) if ticket else out
    kern(grid=(n // 64, spec.split, 1), block=(32 * spec.warps, 1, 1), shared_mem=smem,
         args=[x, qw, sc, qz, qw, out, ws, cnt, m, n, k, 128, bps, x.stride(0), sc.stride(0), qz.stride(0),
               out.stride(0)])  # fmt: skip
    return out


def ours_cfg(cfg: dict[str, Any] | None, lay: Any, x: torch.Tensor) -> torch.Tensor:
    return GB.ours(K, lay, x, cfg)


def timed(label: str, name: str, fn: Callable[[Any, torch.Tensor], torch.Tensor], layers: list[Any],
          xs: list[torch.Tensor], check: bool, nbytes: int, bw: float, cub: float) -> float:  # fmt: skip
    if time.time() - T0 > BUDGET_S:
        log(f"  {label} {name}: skipped (budget)")
        return float("nan")
    try:
        if check:
            us, err = GB.checked_time(name, fn, layers, xs, graph_us)
        else:
            us, err = (
                graph_us([partial(fn, layers[i % len(layers)], xs[i % len(xs)]) for i in range(len(layers))]),
                float("nan"),
            )
    except Exception as e:  # noqa: BLE001 - one failing variant must not hide the rest
        log(f"  {label} {name}: FAILED {type(e).__name__}: {str(e)[:300]}")
        return float("nan")
    log(
        f"  {label} {name:<58} {us:7.2f} us ({nbytes / (us * 1e-6) / bw:4.0%} HBM, {cub / us:4.2f}x cuBLAS) err {err:.1e}"
    )
    return us


def launch_plan(m: int, n: int, k: int, bits: int, **kw: Any) -> dict[str, Any] | None:
    """`cuda_plan`'s launch keys (without the kernel's name: the probe's configs say "kernel": "cuda")."""
    plan = cuda_plan(m, n, k, bits, SMS, **kw)
    return None if plan is None else {key: v for key, v in plan.items() if key != "kernel"}


def small_variants(
    m: int, k: int, n: int, bits: int, full: bool
) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """(plan, ablations) pairs: the default plan first, then bufs / splits / warps / caps, then ablations
    (`full`: more splits and caps, and the ablations of the deepest plan too)."""
    base = launch_plan(m, n, k, bits, mid=False, forced=True)
    assert base is not None
    blocks = k // 128
    out: list[tuple[dict[str, Any], tuple[str, ...]]] = [(base, ())]
    deep = [base | {"bufs": b, "min_blocks": 2} for b in (3, 4)] if bits == 4 else []  # 8-bit: spills
    out += [(p, ()) for p in deep]
    for d in (1, 2, 4, 8):
        if (
            blocks % d
            or d == base["split_k"]
            or (n // 64) * d > 8 * SMS
            or blocks // d < 4
            or (not full and d == 8)
        ):
            continue
        for bufs in (2, 4) if bits == 4 else (2,):
            p = base | {
                "split_k": d,
                "cluster": 2 <= d <= 8,
                "bufs": bufs,
                "min_blocks": 3 if bufs == 2 and bits == 4 else 2,
            }
            out.append((p, ()))
    out += [(base | {"cluster": not base["cluster"]}, ())] if base["split_k"] > 1 else []
    out += [(base | {"warps": 8, "min_blocks": 1}, ()), (base | {"warps": 8, "min_blocks": 1, "bufs": 3}, ())]
    out += [
        (base | {"min_blocks": mb}, ()) for mb in (2, 4) if mb != base["min_blocks"] and full and bits == 4
    ]
    if full and bits == 4:  # 8 warps over one K slice: 4 (or 2) blocks a warp, all in flight with bufs = 4
        out += [
            (base | {"split_k": 1, "cluster": False, "warps": 8, "min_blocks": 1, "bufs": b}, ())
            for b in (2, 4)
        ]
    mid = launch_plan(m, n, k, bits, mid=True, forced=True)
    if mid is not None:  # the mid-M kernel (4 strips a CTA share x, scale folded) with whole blocks ahead
        out += [(mid | {"bufs": b}, ()) for b in ((1, 2, 3) if bits == 4 else (1, 2))]
    for p in (base, deep[1]) if full and deep else (base,):
        out += [(p, ("noreduce",)), (p, ("nox",)), (p, ("nocompute",)), (p, ("noreduce", "nox", "nocompute"))]
        out += [(p, ("nodeq",)), (p, ("nomma",))] if full else []
    if full and deep and blocks % 4 == 0:  # the same loads alone on other grids: 384 CTAs, 96 CTAs of 8 warps
        pure = ("noreduce", "nox", "nocompute")
        out += [(base | {"split_k": 4, "cluster": True, "bufs": 2, "min_blocks": 3}, pure),
                (base | {"split_k": 4, "cluster": True, "bufs": 4, "min_blocks": 2}, pure),
                (base | {"split_k": 1, "cluster": False, "warps": 8, "min_blocks": 1, "bufs": 4}, pure)]  # fmt: skip
    return out
