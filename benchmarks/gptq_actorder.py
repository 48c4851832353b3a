"""Act-order on the GPTQ kernels (issue #11): the permutation of x alone, and act-order against plain per path.

`python benchmarks/gptq_actorder.py` on a CUDA GPU, in one run:

1. `PERM` rows: the permutation `y = x[:, perm]` alone at M = 1, 16, 64, 256, 1024 (`PERM_MS`) and K = 4096,
   14336: the Triton kernel (`_permute_cols_kernel`, one program a row and 1024 columns), the previous
   CUDA kernel (`fg_permute_x`, 8 columns a thread gathered from global memory) and `fg_permute_rows`
   (`gptq_cuda_permute.py`: "rows" its plan, rows staged in shared memory, about four CTAs an SM;
   "rows_p2" two), each checked bit-equal to `x[:, perm]` first, with its bytes floor: M·K·2 bytes read
   and written at the measured copy bandwidth.
2. `ACT` rows: per M (`ACT_MS`) and Llama-3-8B shape, plain 4-bit g128 (the default dispatch) against
   act-order by the default dispatch ("act"), with the permutation at two CTAs an SM ("act_p2", M ≥ 256),
   the wgmma kernel without PDL ("wg0") and the dequantize-then-cuBLAS path
   ("deq") at M ≥ 64; at M ≤ 16 the kernels gathering x through perm themselves ("g_small", "g_mid",
   "g_ahead": the mid-M kernel a block ahead); then plain and act-order again ("plain2", "act2": the run's noise; the ratios are
   against the faster plain).

Every variant is checked against `x.float() @ W.float()` before it is timed as CUDA-graph replays,
operands rotated so that L2 stays cold (`gpu_gptq.checked_time`). Writes $OUT/gptq_actorder.txt line by
line; `ACT_BUDGET_S` (default 80) skips what is left past that many seconds.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gpu import copy_bandwidth, graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_cuda  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_permute import permute_rows  # noqa: E402
from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul  # noqa: E402
from fusegraph.runtime.kernels.gptq_tiled_kernels import _permute_cols_kernel  # noqa: E402

ACT_MS = tuple(int(m) for m in os.environ.get("ACT_MS", "256,1024,64,16,4,1").split(","))
PERM_MS = tuple(int(m) for m in os.environ.get("PERM_MS", "1,16,64,256,1024").split(",") if m)
BUDGET_S = float(os.environ.get("ACT_BUDGET_S", "80"))
T0 = time.time()
SMS = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
LINES: list[str] = []

# the previous CUDA permutation (third/fourth session): 8 columns a thread, gathered from global memory
_OLD_SOURCE = r"""
typedef unsigned int u32;
typedef unsigned short u16;
struct __attribute__((aligned(16))) u32x4 { u32 x, y, z, w; };
struct __attribute__((aligned(16))) i32x4 { int x, y, z, w; };
extern "C" __global__ void __launch_bounds__(128) fg_permute_x(const u16* __restrict__ x, const int* __restrict__ perm,
                                                               u16* __restrict__ y, int K, int stride_xm) {
  asm volatile("griddepcontrol.launch_dependents;");
  const int c = (blockIdx.x * 128 + threadIdx.x) * 8, m = blockIdx.y;
  if (c >= K) return;
  const i32x4 p0 = *(const i32x4*)(perm + c), p1 = *(const i32x4*)(perm + c + 4);
  const u16* xr = x + (unsigned long long)m * stride_xm;
  u32x4 v;
  v.x = (u32)xr[p0.x] | ((u32)xr[p0.y] << 16);
  v.y = (u32)xr[p0.z] | ((u32)xr[p0.w] << 16);
  v.z = (u32)xr[p1.x] | ((u32)xr[p1.y] << 16);
  v.w = (u32)xr[p1.z] | ((u32)xr[p1.w] << 16);
  *(u32x4*)(y + (unsigned long long)m * K + c) = v;
}
"""
_OLD: list[Any] = []


def log(s: str) -> None:
    print(s, flush=True)
    LINES.append(s)
    if out := os.environ.get("OUT"):  # every line at once: a timeout keeps what was measured
        Path(out, "gptq_actorder.txt").write_text("\n".join(LINES) + "\n")


def perm_triton(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    m, k = x.shape
    y = torch.empty((m, k), dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(k))
    _permute_cols_kernel[(triton.cdiv(k, block), m)](x, perm, y, k, x.stride(0), BLOCK=block, num_warps=4)
    return y


def perm_old(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    if not _OLD:
        _OLD.append(torch.cuda._compile_kernel(_OLD_SOURCE, "fg_permute_x"))
    m, k = x.shape
    y = torch.empty((m, k), dtype=x.dtype, device=x.device)
    _OLD[0](grid=((k // 8 + 127) // 128, m, 1), block=(128, 1, 1), args=[x, perm, y, k, x.stride(0)])
    return y


def perm_new(x: torch.Tensor, perm: torch.Tensor, per_sm: int | None = None) -> torch.Tensor:
    y = permute_rows(x, perm, per_sm=per_sm)
    assert y is not None
    return y


def perm_p2(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return perm_new(x, perm, per_sm=2)


def _bind(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
          perm: torch.Tensor) -> Callable[[], torch.Tensor]:  # fmt: skip
    return lambda: fn(x, perm)


def permute_alone(bw: float) -> None:
    variants: list[tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = [
        ("triton", perm_triton), ("old", perm_old), ("rows", perm_new), ("rows_p2", perm_p2)]  # fmt: skip
    for k_in in (4096, 14336):
        perm = torch.randperm(k_in, device="cuda").to(torch.int32)
        for m in PERM_MS:
            copies = GB.copies_for(2 * m * k_in * 2)
            xs = [torch.randn(m, k_in, device="cuda", dtype=torch.float16) for _ in range(copies)]
            floor = 2 * m * k_in * 2 / bw * 1e6
            cells = []
            for name, fn in variants:
                if not torch.equal(fn(xs[0], perm), xs[0][:, perm.long()]):
                    cells.append(f"{name} WRONG")
                    continue
                us = graph_us([_bind(fn, xs[i], perm) for i in range(copies)])
                cells.append(f"{name} {us:6.2f} ({floor / us:4.0%})")
            log(f"PERM M={m:<5}K={k_in:<6} floor {floor:6.2f} us | " + " | ".join(cells))


def act_variants(m: int, n: int) -> list[tuple[str, str, dict[str, Any] | None, Any]]:
    """(name, layer kind, config, permutation or None: the default) of one M, plain first; plain and the default
    act-order again last (the run's noise)."""
    out: list[tuple[str, str, dict[str, Any] | None, Any]] = [
        ("plain", "plain", None, None), ("act", "act", None, None)]  # fmt: skip
    if (
        m <= 16
    ):  # the kernels' own gather of x through perm (no permutation): small-M, mid-M, mid-M a block ahead
        gather = {"kernel": "cuda", "xperm": False}
        out += [("g_small", "act", gather | {"mid": False}, None), ("g_mid", "act", gather | {"mid": True}, None),
                ("g_ahead", "act", gather | {"mid": True, "perm_ahead": True}, None)]  # fmt: skip
    if m >= 256:  # fg_permute_rows at two CTAs an SM
        out.append(("act_p2", "act", None, perm_p2))
    if m >= 64:  # the wgmma kernel without PDL; the dequantize-then-cuBLAS path
        out += [
            ("wg0", "act", {"wgmma": True, "pdl": 0}, None),
            ("deq", "act", {"cuda": False, "kernel": "dequant"}, None),
        ]
    return out + [("plain2", "plain", None, None), ("act2", "act", None, None)]


class K:
    tiled = staticmethod(gptq_tiled_matmul)


def main() -> int:
    log(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s; GPTQ g128 fp16, CUDA-graph device time (us), L2 cold")
    torch.manual_seed(0)
    if PERM_MS:
        permute_alone(bw)
    log(f"permutation rows done: {time.time() - T0:.0f} s")
    failed = 0
    benches = {label: GB.Bench(k_in, n_out, ("plain", "act")) for label, k_in, n_out in GB.SHAPES}
    log(f"operands ready: {time.time() - T0:.0f} s")
    default_permute = gptq_cuda._permute_x
    for m in ACT_MS:  # M-major in the order given, so that a budget cut drops the rest
        for label, k_in, n_out in GB.SHAPES:
            b = benches[label]
            times: dict[str, float] = {}
            cells: list[str] = []
            for name, kind, cfg, permute in act_variants(m, n_out):
                if time.time() - T0 > BUDGET_S:
                    cells.append(f"{name} skipped (budget)")
                    continue
                layers = b.layers[kind]
                gptq_cuda._permute_x = permute or default_permute  # type: ignore[assignment]
                try:
                    us, _ = GB.checked_time(name, lambda lay, x: GB.ours(K, lay, x, cfg), layers,
                                            b.xs(m, len(layers)), graph_us)  # fmt: skip
                except Exception as e:  # noqa: BLE001 - one failing variant must not hide the row
                    failed += 1
                    cells.append(f"{name} FAILED {type(e).__name__}: {str(e)[:160]}")
                    continue
                finally:
                    gptq_cuda._permute_x = default_permute  # type: ignore[assignment]
                times[name] = us
                cells.append(f"{name} {us:6.2f}")
            plain = times.get("plain", float("nan"))
            plain = min(plain, times.get("plain2", plain))
            ratios = " ".join(
                f"{n}/plain {t / plain:.2f}x" for n, t in times.items() if n not in ("plain", "plain2")
            )
            log(
                f"ACT {label:<8}{k_in}x{n_out:<6} M={m:<5}"
                + " | ".join(cells)
                + f" || {ratios} [{time.time() - T0:.0f} s]"
            )
    log(f"total {time.time() - T0:.0f} s, {failed} failed; cuda path: {gptq_cuda.cuda_path_status()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
