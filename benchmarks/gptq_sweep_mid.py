"""The mid-M CUDA GPTQ kernel's sweep sections of `gptq_sweep.py` ("midm", "grids", "sfold"): its plan against
other grids and options, each variant checked against x @ W, then timed as CUDA-graph replays, L2 cold."""

# ruff: noqa: B023, N812
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from gptq_sweep_kit import GB, K, log, timed


def mid_variants(m: int, k_in: int, n_out: int, bits: int = 4, act: bool = False) -> list[dict[str, Any]]:
    """The mid-M CUDA kernel (`gptq_cuda_mid.py`): its default plan first, then 4 or 2 strips a CTA
    with the splits that give 1-4 CTAs an SM (cluster up to 8, else the ticket)."""
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan

    base = cuda_mid_m_plan(m, n_out, k_in, bits, 132, act_order=act, forced=True)
    if base is None:
        return []
    out = [{"kernel": "cuda"} | base]
    blocks = k_in // 128
    for w in (4, 2):
        tiles = n_out // 64 // w
        for d in (d for d in range(1, 17) if blocks % d == 0 and 100 <= tiles * d <= 4 * 132 * 4 // w):
            out.append({"kernel": "cuda", "mid": True, "split_k": d, "warps": w, "cluster": 2 <= d <= 8,
                        "min_blocks": 8 // w})  # fmt: skip
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for v in out:
        unique.setdefault(tuple(sorted(v.items())), v)
    return list(unique.values())[:7]


def mid_m(bw: float, ms: Sequence[int] = (64, 32, 16)) -> None:
    """M = 64, 32, 16 on the four shapes: cuBLAS fp16, tinygemm (bf16), the Triton path, the default
    dispatch, and the mid-M CUDA kernel's variants, each as CUDA-graph device time, L2 cold."""
    benches = {label: GB.Bench(k_in, n_out, ("plain",)) for label, k_in, n_out in GB.SHAPES}
    for m in ms:
        for label, k_in, n_out in GB.SHAPES:
            layers = benches[label].layers["plain"]
            xs = benches[label].xs(m, len(layers))
            xb = [x.bfloat16() for x in xs]
            times: dict[str, float] = {}
            runs: list[tuple[str, Callable[..., Any], list[torch.Tensor], float]] = [
                ("cuBLAS", lambda lay, x: torch.matmul(x, lay.w), xs, 5e-3),
                ("tinygemm", GB.tinygemm, xb, 2e-2),
                ("triton", lambda lay, x: GB.ours(K, lay, x, GB.TRITON), xs, 5e-3),
                ("default", lambda lay, x: GB.ours(K, lay, x), xs, 5e-3),
            ]
            runs += [(f"mid{v}", lambda lay, x, v=v: GB.ours(K, lay, x, v), xs, 5e-3)
                     for v in mid_variants(m, k_in, n_out)]  # fmt: skip
            for name, fn, xin, tol in runs:
                if (got := timed(f"{label} M={m}", name, fn, layers, xin, tol)) is None:
                    continue
                times[name], err = got
                cub = times.get("cuBLAS", float("nan"))
                nbytes = GB.quant_bytes(k_in, n_out, 4) + m * (k_in + n_out) * 2
                log(f"  {label} M={m} {name:<9} {times[name]:7.2f} us ({nbytes / (times[name] * 1e-6) / bw:4.0%} HBM, "
                    f"{cub / times[name]:4.2f}x cuBLAS) err {err:.1e}")  # fmt: skip
            mids = {n_: t for n_, t in times.items() if n_.startswith("mid")}
            best = min(mids, key=mids.__getitem__) if mids else "-"
            fmt = {
                n_: f"{times[n_]:.2f}" if n_ in times else "-"
                for n_ in ("cuBLAS", "tinygemm", "triton", "default")
            }
            log(f"MID {label} {k_in}x{n_out} M={m}: cuBLAS {fmt['cuBLAS']} | tinygemm {fmt['tinygemm']} | triton "
                f"{fmt['triton']} | default {fmt['default']} | best cuda {mids.get(best, float('nan')):.2f} {best}")  # fmt: skip
    del benches
    torch.cuda.empty_cache()


def mid_grids(bw: float, ms: Sequence[int] = (1, 4, 16)) -> None:
    """The mid-M kernel at small M on the wide shapes (qkv, gate_up): its plan against other grids, 1-8 strips a
    CTA at splits that give 1-6 CTAs an SM (the plan's 192 CTAs of qkv leave 60 SMs with two and 72 with one),
    cluster up to split 8, else the ticket; registers capped for the CTAs an SM the grid asks; sfold as the plan."""
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan

    shapes = [GB.SHAPES[0], GB.SHAPES[2]]
    benches = {label: GB.Bench(k_in, n_out, ("plain",)) for label, k_in, n_out in shapes}
    for m in ms:
        for label, k_in, n_out in shapes:
            layers = benches[label].layers["plain"]
            xs = benches[label].xs(m, len(layers))
            plan = cuda_mid_m_plan(m, n_out, k_in, 4, 132, forced=True)
            variants: list[tuple[str, dict[str, Any]]] = [("plan", {"kernel": "cuda"} | plan)] if plan else []
            blocks = k_in // 128
            for w in (1, 2, 4, 8):
                for d in (d for d in (2, 4, 8, 16) if blocks % d == 0):
                    ctas = n_out // 64 // w * d
                    per_sm = -(-ctas // 132)
                    if ctas < 128 or per_sm > 6 or per_sm * w > 16:
                        continue
                    g: dict[str, Any] = {"kernel": "cuda", "mid": True, "split_k": d, "warps": w,
                                         "cluster": d <= 8, "min_blocks": max(1, min(16 // w, per_sm)),
                                         "sfold": bool(plan and plan.get("sfold"))}  # fmt: skip
                    if plan is None or any(
                        g[key] != plan.get(key) for key in ("split_k", "warps", "min_blocks")
                    ):
                        variants.append((f"w{w}/s{d}/b{g['min_blocks']}", g))
            times: dict[str, float] = {}
            runs: list[tuple[str, dict[str, Any] | None]] = [("default", None), *variants]
            for name, v in runs:
                if (
                    got := timed(
                        f"{label} M={m}", name, lambda lay, x, v=v: GB.ours(K, lay, x, v), layers, xs
                    )
                ) is None:
                    continue
                times[name], err = got
                nbytes = GB.quant_bytes(k_in, n_out, 4) + m * (k_in + n_out) * 2
                log(f"  {label} M={m} {name:<12} {times[name]:7.2f} us ({nbytes / (times[name] * 1e-6) / bw:4.0%} HBM) "
                    f"err {err:.1e}")  # fmt: skip
            best = min(times, key=times.__getitem__) if times else "-"
            log(f"GRID {label} M={m}: default {times.get('default', float('nan')):.2f} | plan "
                f"{times.get('plan', float('nan')):.2f} | best {times.get(best, float('nan')):.2f} {best}")  # fmt: skip
    del benches
    torch.cuda.empty_cache()


def scale_fold(bw: float, ms: Sequence[int] = (1, 4, 8, 16)) -> None:
    """The mid-M kernel with the scale out of its inner loop ("sfold": each block's fp32 sums of (q - z)·x scaled
    once) against its plan without, 4-bit and 8-bit, on the four shapes (o_proj and down forced onto it)."""
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan

    benches = {label: GB.Bench(k_in, n_out, ("plain", "int8")) for label, k_in, n_out in GB.SHAPES}
    for m in ms:
        for label, k_in, n_out in GB.SHAPES:
            for kind, bits in (("plain", 4), ("int8", 8)):
                layers = benches[label].layers[kind]
                xs = benches[label].xs(m, len(layers))
                plan = cuda_mid_m_plan(m, n_out, k_in, bits, 132, forced=True)
                if plan is None:
                    continue
                runs = [("default", None), ("mid", {"kernel": "cuda"} | plan | {"sfold": False})]
                # without and with sfold: the plan takes it itself at M <= 8 (gptq_plan._CUDA_MID_SFOLD_MAX_M)
                if (m + 7) // 8 <= 2:
                    runs.append(("mid/sfold", {"kernel": "cuda"} | plan | {"sfold": True}))
                times: dict[str, float] = {}
                for name, v in runs:
                    got = timed(
                        f"{label} {bits}-bit M={m}",
                        name,
                        lambda lay, x, v=v: GB.ours(K, lay, x, v),
                        layers,
                        xs,
                    )
                    if got is None:
                        continue
                    times[name], err = got
                    nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
                    log(f"  {label} {bits}-bit M={m} {name:<10} {times[name]:7.2f} us "
                        f"({nbytes / (times[name] * 1e-6) / bw:4.0%} HBM) err {err:.1e}")  # fmt: skip
                fmt = {n_: f"{times[n_]:.2f}" if n_ in times else "-" for n_, _ in runs}
                log(f"SFOLD {label} {bits}-bit M={m}: " + " | ".join(f"{n_} {t}" for n_, t in fmt.items()))
    del benches
    torch.cuda.empty_cache()
