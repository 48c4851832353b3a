"""The stream-K warp-specialized small-M GPTQ kernel (`gptq_cuda_stream.py`) against the default dispatch (issue #11).

`python benchmarks/gptq_stream_probe.py [--only m1,m16,m4,int8] [--cfgs A,B,...]`: CUDA-graph device time,
operands rotated so that L2 stays cold (`gptq_cuda_probe_kit.timed`), of cuBLAS fp16, the default dispatch,
the kernel's ring alone (`probe`: the same grid, stages and bulk copies, the consumers read one word a stage;
timing only, wrong by design) and the kernel under several plans (each checked against `x.float() @ W` first),
on the four Llama-3-8B shapes. A plan: consumer warps, stages, CTAs an SM, padded word rows.
Lines: `STREAM <shape> <bits>-bit M=<m>: cuBLAS | default | ring | best plan`; all to $OUT/gptq_stream_probe.txt.
"""

# ruff: noqa: E731, N812
from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gptq_cuda_probe_kit import BUDGET_S, LINES, SMS, T0, K, compile_all, log, ours_cfg, spec_of, timed  # noqa: E402
from gpu import copy_bandwidth, run_sections  # noqa: E402

from fusegraph.runtime.kernels import gptq_cuda as C  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_stream import (  # noqa: E402
    STREAM_KERNEL_NAME,
    StreamSpec,
    stream_grid,
    stream_kernel_source,
    stream_smem_bytes,
)
from fusegraph.runtime.kernels.gptq_plan import cuda_plan  # noqa: E402

# name: (consumer warps, stages, CTAs an SM, padded rows, cluster size or 0 for the ticket, cp.async producer warps,
# 0 for one bulk-copy producer, -1 for none: "direct", each consumer loads its next unit into registers)
PLANS: dict[str, tuple[int, int, int, bool, int, int]] = {
    "K": (4, 8, 2, False, 0, 0),
    "P": (8, 16, 1, True, 0, 1),
    "Q": (8, 16, 1, True, 0, 2),
    "R": (4, 8, 2, True, 0, 2),
    "T": (8, 8, 1, True, 0, 2),
    "U": (4, 8, 2, True, 0, 1),
    "V": (8, 16, 1, True, 0, 4),
    "Y": (4, 16, 1, True, 0, 4),  # 8 warps: consumers take up to 255 registers
    "W": (8, 8, 1, True, 0, -1),
    "X": (4, 4, 2, True, 0, -1),
}
RING = ("P", "Q", "W")  # the ring alone on these plans (M=1 4-bit)


def _cfg(name: str) -> dict[str, Any]:
    nc, st, ctas, pad, cl, npr = PLANS[name]
    return {"kernel": "cuda", "stream": True, "consumers": nc, "stages": st, "ctas": ctas, "pad": pad, "cl": cl,
            "cpa": npr > 0, "producers": max(npr, 1), "direct": npr < 0}  # fmt: skip


def _spec(name: str, m: int, bits: int, probe: int = 0) -> StreamSpec:
    nc, st, ctas, pad, cl, npr = PLANS[name]
    return StreamSpec(bits=bits, bf16=False, mt=1 if m <= 8 else 2, consumers=nc, stages=st, pad=pad, probe=probe,
                      min_blocks=ctas, cl=cl, cpa=npr > 0, producers=max(npr, 1), direct=npr < 0)  # fmt: skip


def precompile(specs: list[StreamSpec], defaults: list[Any]) -> dict[StreamSpec, Any]:
    """NVRTC in parallel threads: the stream specs (production ones where `gptq_cuda` looks) and the default
    plans' small-M / mid-M specs. Returns the probe specs' kernels."""
    todo = [s for s in dict.fromkeys(specs) if (0, s) not in C._KERNELS]
    from gptq_cuda_probe_kit import _source

    dflt = [s for s in dict.fromkeys(defaults) if (0, s) not in C._KERNELS]
    t = time.time()
    kerns = compile_all(
        [(stream_kernel_source(s), STREAM_KERNEL_NAME) for s in todo] + [_source((s, ())) for s in dflt]
    )
    probes = {}
    for s, kern in zip(todo + dflt, kerns, strict=True):
        if isinstance(s, StreamSpec) and s.probe:
            probes[s] = kern
        else:
            C._KERNELS[(0, s)] = kern
    log(f"  (compiled {len(todo) + len(dflt)} kernels in {time.time() - t:.1f} s)")
    return probes


def ring(kern: Any, spec: StreamSpec, ctas: int, lay: Any, x: torch.Tensor) -> torch.Tensor:
    """One launch of the ring alone (`probe` spec) with the production launch's arguments."""
    r = lay.r
    qw, sc, qz = r["qweight"], lay.t["scales"], r["qzeros"]
    m, k = x.shape
    n = qw.shape[0] * 64
    smem = stream_smem_bytes(spec, m)
    if smem > 48 * 1024 - 1:
        C.raise_smem_limit(kern, smem)
    grid = stream_grid(spec, n, k, SMS * ctas)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    ws = torch.empty((grid, 2, m, 64), dtype=torch.float32, device=x.device)
    kern(grid=(grid, 1, 1), block=(32 * (spec.consumers + (0 if spec.direct else spec.producers)), 1, 1), shared_mem=smem,
         args=[x, qw, sc, qz, out, ws, C._counters(x.device, n // 64), m, n, k, 128, x.stride(0), sc.stride(0),
               qz.stride(0), out.stride(0)])  # fmt: skip
    return out


def active_clusters(kern: Any, spec: StreamSpec, smem: int) -> str:
    """cuOccupancyMaxActiveClusters of a cluster kernel (how many of its clusters the GPU holds at once)."""
    import ctypes

    from torch.cuda._utils import _get_gpu_runtime_library

    from fusegraph.runtime.kernels.gptq_cuda_launch import _Config

    if smem > 48 * 1024 - 1:
        C.raise_smem_limit(kern, smem)
    cfg = _Config((ctypes.c_uint * 3)(spec.cl * 32, 1, 1), (ctypes.c_uint * 3)(32 * spec.consumers + 32, 1, 1), smem,
                  ctypes.c_void_p(torch.cuda.current_stream().cuda_stream), None, 0)  # fmt: skip
    num = ctypes.c_int(0)
    rc = _get_gpu_runtime_library().cuOccupancyMaxActiveClusters(
        ctypes.byref(num), kern.func, ctypes.byref(cfg)
    )
    return f"{num.value} (rc {rc})"


def stream(
    bw: float, ms: tuple[int, ...], bits: int, names: list[str], shapes: tuple[Any, ...] = GB.SHAPES
) -> None:
    for label, k_in, n_out in shapes:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} {bits}-bit M={ms}: skipped (budget)")
            continue
        kind = "plain" if bits == 4 else "int8"
        b = GB.Bench(k_in, n_out, (kind,))
        layers = b.layers[kind]
        for m in ms:
            rings = [n_ for n_ in RING if n_ in names] if m == 1 and bits == 4 else []
            dplan = cuda_plan(m, n_out, k_in, bits, SMS, cap=(9, 0))
            dspec = [spec_of(m, k_in, bits, dplan)] if dplan and dplan["kernel"] in ("small", "mid") else []
            probes = precompile(
                [_spec(n_, m, bits) for n_ in names] + [_spec(n_, m, bits, 1) for n_ in rings], dspec
            )
            xs = b.xs(m, len(layers))
            nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
            cub = timed(label, f"M={m} cuBLAS", lambda lay, x: torch.matmul(x, lay.w), layers, xs, True, nbytes,
                        bw, 1.0)  # fmt: skip
            dflt = timed(label, f"M={m} {bits}-bit default {dplan}", lambda lay, x: GB.ours(K, lay, x), layers, xs,
                         True, nbytes, bw, cub)  # fmt: skip
            rt = {}
            for n_ in rings:
                sp = _spec(n_, m, bits, 1)
                rt[n_] = timed(label, f"M={m} ring alone {n_} {PLANS[n_]}", partial(ring, probes[sp], sp, PLANS[n_][2]),
                               layers, xs, False, nbytes, bw, cub)  # fmt: skip
            rows = []
            for n_ in names:
                us = timed(label, f"M={m} {bits}-bit stream {n_} {PLANS[n_]}", partial(ours_cfg, _cfg(n_)), layers,
                           xs, True, nbytes, bw, cub)  # fmt: skip
                rows.append((us, n_))
            for n_ in [n_ for n_ in names if PLANS[n_][4]] if label == "qkv" else []:
                sp = _spec(n_, m, bits)
                try:
                    got = active_clusters(C._KERNELS[(0, sp)], sp, stream_smem_bytes(sp, m))
                except Exception as e:  # noqa: BLE001 - a diagnostic only
                    got = f"unknown ({type(e).__name__}: {str(e)[:100]})"
                log(f"CLUSTERS {n_} {PLANS[n_]} M={m} {bits}-bit: at most {got} active clusters of {sp.cl}")
            ok = sorted(r for r in rows if r[0] == r[0])
            best = ok[0] if ok else (float("nan"), "-")
            ring_s = " ".join(f"{n_} {t:.2f}" for n_, t in rt.items())
            log(f"STREAM {label} {bits}-bit M={m}: cuBLAS {cub:.2f} | default {dflt:.2f} | ring {ring_s or '-'} | "
                f"best {best[1]} {best[0]:.2f} ({dflt / best[0]:.2f}x default, {cub / best[0]:.2f}x cuBLAS) | "
                + " ".join(f"{n_} {t:.2f}" for t, n_ in rows))  # fmt: skip
        del b, layers
        torch.cuda.empty_cache()


def act(bw: float, ms: tuple[int, ...], name: str, shapes: tuple[Any, ...] = GB.SHAPES) -> None:
    """Act-order: the default dispatch (plain and act-order) against the stream-K kernel on x permuted first,
    launched plainly and with PDL after the permutation."""
    for label, k_in, n_out in shapes:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} act: skipped (budget)")
            continue
        b = GB.Bench(k_in, n_out, ("plain", "act"))
        for m in ms:
            nbytes = GB.quant_bytes(k_in, n_out, 4) + m * (k_in + n_out) * 2
            t = {}
            for run, kind, cfg in (("plain", "plain", None), ("act", "act", None),
                                   ("stream", "act", _cfg(name)), ("stream+pdl", "act", _cfg(name) | {"xperm_pdl": True})):  # fmt: skip
                layers = b.layers[kind]
                fn = partial(ours_cfg, cfg) if cfg else (lambda lay, x: GB.ours(K, lay, x))
                t[run] = timed(label, f"M={m} act {run} {cfg}", fn, layers, b.xs(m, len(layers)), True, nbytes, bw,
                               float("nan"))  # fmt: skip
            log(
                f"STREAM-ACT {label} M={m}: "
                + " | ".join(f"{r} {v:.2f} ({v / t['plain']:.2f}x)" for r, v in t.items())
            )
        del b
        torch.cuda.empty_cache()


def ncu_once(name: str, m: int) -> None:
    """Eager launches on qkv at M=`m` for Nsight Compute: plan `name` twice (the first compiles), then the
    default twice (ncu: `-k regex:fg_gptq --launch-skip 1 --launch-count 3`)."""
    lay = GB.make_layer(4096, 6144)
    x = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
    for cfg in (_cfg(name), _cfg(name), None, None):
        GB.ours(K, lay, x, cfg)
    torch.cuda.synchronize()


def main() -> int:
    if "--ncu" in sys.argv:
        ncu_once(sys.argv[sys.argv.index("--ncu") + 1], int(os.environ.get("STREAM_NCU_M", "1")))
        return 0
    log(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | {C.cuda_path_status()}")
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    names = sys.argv[sys.argv.index("--cfgs") + 1].split(",") if "--cfgs" in sys.argv else list(PLANS)
    names8 = [n_ for n_ in names if n_ in os.environ.get("STREAM_CFGS8", "K,Q,R,W,X").split(",")]
    plan = [
        ("m1", lambda: stream(bw, (1,), 4, names)),
        ("m16", lambda: stream(bw, (16,), 4, names)),
        ("int8", lambda: stream(bw, (1,), 8, names8)),
        ("m4", lambda: stream(bw, (4,), 4, names)),
        ("act", lambda: act(bw, (1, 16), os.environ.get("STREAM_ACT_CFG", "Q"))),
    ]
    failed = run_sections(plan, only, log, LINES, "gptq_stream_probe.txt")
    print(
        "\n==== SUMMARY ====\n" + "\n".join(line for line in LINES if line.startswith(("STREAM", "CLUSTERS")))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
