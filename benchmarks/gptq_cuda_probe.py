"""Where the small-M CUDA GPTQ kernels lose time (issue #11): ablations timed on one GPU call.

`python benchmarks/gptq_cuda_probe.py [--only floor,m1,m16,int8,act] [--ncu]`: CUDA-graph device
time with the operands rotated so that L2 stays cold (as `gptq_sweep.py`), of

- floors: an empty CUDA kernel (1 and 192 CTAs) and a pure 16-byte read of each shape's int4 bytes
  (grids of 1-4 CTAs an SM, 4 or 8 loads in flight a thread): what this harness can reach;
- the small-M kernel (`fg_gptq_small_m`) as planned, with more register buffers (`bufs`), other
  splits, reductions, warps and register caps (each checked against `x.float() @ W` first), and its
  ablations (timing only, their results are wrong by design): `noreduce` (no cross-warp or split-K
  sum), `nox` (x not staged), `nocompute` (the words xor-ed instead of dequantized and multiplied),
  all three (`pure`: the same loads, grid and launch, nothing else);
- M = 16 on the mid-M kernel and 8-bit M = 1 variants; act-order's permutation of x alone.

`--ncu`: one eager launch of the qkv M=1 default for Nsight Compute (the caller wraps ncu around it).
Every line goes to stdout and $OUT/gptq_cuda_probe.txt. The ablations, compiles and timing: `gptq_cuda_probe_kit.py`.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gptq_cuda_probe_kit import (  # noqa: E402
    BUDGET_S,
    FLOOR,
    FLOOR_SRC,
    LINES,
    SMS,
    T0,
    K,
    KernelSpec,
    compile_all,
    launch_plan,
    launch_probe,
    log,
    ours_cfg,
    precompile,
    small_variants,
    spec_of,
    timed,
)
from gpu import copy_bandwidth, graph_us, run_sections  # noqa: E402

from fusegraph.runtime.kernels import gptq_cuda as C  # noqa: E402

# ---- the sections ----------------------------------------------------------------------------------------


def floors(bw: float) -> None:
    """An empty CUDA kernel, a pure read of each shape's int4 bytes, our permutation of x."""
    names = ("fg_null", "fg_read", "fg_permute")
    kern = dict(zip(names, compile_all([(FLOOR_SRC, n) for n in names]), strict=True))
    FLOOR.update(kern)
    out = torch.zeros(1 << 16, dtype=torch.int32, device="cuda")
    for g in (1, 192, 396):
        us = graph_us([lambda: kern["fg_null"](grid=(g, 1, 1), block=(128, 1, 1), args=[out])])
        log(f"  null CUDA kernel, {g} CTAs: {us:5.2f} us")
    for label, k_in, n_out in GB.SHAPES:
        vecs = k_in * n_out // 32  # 16-byte vectors of the int4 values
        bufs = [torch.randint(-(2**31), 2**31 - 1, (vecs * 4,), device="cuda", dtype=torch.int32)
                for _ in range(GB.copies_for(vecs * 16))]  # fmt: skip
        best = float("inf")
        for ctas, threads, unroll in ((132, 256, 8), (264, 256, 8), (396, 256, 4), (528, 128, 8), (264, 128, 8),
                                      (n_out // 64 * 2, 128, 4), (n_out // 64, 256, 8)):  # fmt: skip
            per = vecs // ctas
            us = graph_us([partial(kern["fg_read"], grid=(ctas, 1, 1), block=(threads, 1, 1), args=[b, out, per, unroll]) for b in bufs])  # fmt: skip
            best = min(best, us)
            log(f"  read {label} {per * ctas * 16 / 1e6:5.1f} MB, {ctas} CTAs x {threads}, {unroll} loads a thread: "
                f"{us:6.2f} us ({per * ctas * 16 / (us * 1e-6) / bw:4.0%} of copy)")  # fmt: skip
        log(f"FLOOR {label}: pure read {best:.2f} us")
        del bufs
    for m, k_in in ((1, 4096), (4, 4096), (16, 4096), (16, 14336)):
        x = torch.randn(m, k_in, device="cuda", dtype=torch.float16)
        perm = torch.randperm(k_in, device="cuda").to(torch.int32)
        y = torch.empty_like(x)
        cu = lambda: kern["fg_permute"](
            grid=((k_in // 8 + 127) // 128, m, 1), block=(128, 1, 1), args=[x, perm, y, k_in, x.stride(0)]
        )
        cu()
        assert torch.equal(y, x[:, perm.long()]), "fg_permute"
        log(f"  permute x [{m}, {k_in}]: Triton {graph_us([lambda: C._permute_x(x, perm)]):5.2f} us, "
            f"CUDA {graph_us([cu]):5.2f} us")  # fmt: skip


def small(bw: float, ms: tuple[int, ...], bits: int, shapes: tuple[Any, ...] = GB.SHAPES) -> None:
    """The small-M kernel's variants and ablations on each shape at each M (all of them on qkv)."""
    for label, k_in, n_out in shapes:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} {bits}-bit M={ms}: skipped (budget)")
            continue
        try:
            _small_shape(bw, ms, bits, label, k_in, n_out)
        except Exception:  # noqa: BLE001 - one shape's failure must not hide the others
            log(f"  {label} {bits}-bit: FAILED\n{traceback.format_exc()[-1500:]}")
        torch.cuda.empty_cache()


def _small_shape(bw: float, ms: tuple[int, ...], bits: int, label: str, k_in: int, n_out: int) -> None:
    b = GB.Bench(k_in, n_out, ("plain" if bits == 4 else "int8",))
    layers = b.layers["plain" if bits == 4 else "int8"]
    for m in ms:
        xs = b.xs(m, len(layers))
        var = small_variants(m, k_in, n_out, bits, label == "qkv")
        precompile([(spec_of(m, k_in, bits, p), e) for p, e in var])
        nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
        cub = timed(
            label,
            f"M={m} cuBLAS",
            lambda lay, x: torch.matmul(x, lay.w),
            layers,
            xs,
            True,
            nbytes,
            bw,
            1.0,
        )
        dflt = timed(
            label,
            f"M={m} default dispatch",
            lambda lay, x: GB.ours(K, lay, x),
            layers,
            xs,
            True,
            nbytes,
            bw,
            cub,
        )
        rows = []
        for p, e in var:
            spec = spec_of(m, k_in, bits, p)
            name = f"M={m} {'+'.join(e) or 'ok'} " + " ".join(
                f"{k_}={v}" for k_, v in p.items() if k_ != "kernel"
            )
            fn: Callable[[Any, torch.Tensor], torch.Tensor]
            if e and isinstance(spec, KernelSpec):
                fn = partial(launch_probe, spec, e)
            else:
                fn = partial(ours_cfg, {"kernel": "cuda", "mid": False} | p)
            rows.append((timed(label, name, fn, layers, xs, not e, nbytes, bw, cub), name))
        ok = [r for r in rows if " ok " in r[1] and r[0] == r[0]]
        best = min(ok) if ok else (float("nan"), "-")
        log(
            f"BEST {label} {bits}-bit M={m}: cuBLAS {cub:.2f} | default {dflt:.2f} | best {best[0]:.2f} {best[1]}"
        )


def mid16(bw: float, shapes: tuple[Any, ...] = GB.SHAPES) -> None:
    """M = 16: the mid-M kernel as planned, with whole blocks of words ahead, other splits and strips."""
    for label, k_in, n_out in shapes:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} M=16: skipped (budget)")
            continue
        b = GB.Bench(k_in, n_out, ("plain",))
        layers = b.layers["plain"]
        m = 16
        xs = b.xs(m, len(layers))
        nbytes = GB.quant_bytes(k_in, n_out, 4) + m * (k_in + n_out) * 2
        cub = timed(
            label, "M=16 cuBLAS", lambda lay, x: torch.matmul(x, lay.w), layers, xs, True, nbytes, bw, 1.0
        )
        base = launch_plan(m, n_out, k_in, 4)
        assert base is not None
        blocks = k_in // 128
        plans = [base, base | {"bufs": 2}, base | {"bufs": 3}, base | {"bufs": 4}]
        for w in (4, 2, 8):
            if (n_out // 64) % w:
                continue
            for d in (1, 2, 4, 8, 7):
                if blocks % d == 0 and 100 <= (n_out // 64 // w) * d <= 4 * SMS:
                    plans.append({"split_k": d, "warps": w, "cluster": d > 1, "min_blocks": max(1, 8 // w),
                                  "mid": True, "bufs": 2})  # fmt: skip
        keys = list(dict.fromkeys(tuple(sorted(p.items())) for p in plans))[:10]
        small = [{"split_k": 2, "warps": 4, "cluster": True, "min_blocks": 2, "bufs": 3, "mid": False}]
        cfgs = [dict(key) for key in keys] + (small if blocks % 2 == 0 else [])
        precompile([(spec_of(m, k_in, 4, cfg), ()) for cfg in cfgs])
        for cfg in cfgs:
            timed(label, "M=16 " + " ".join(f"{k_}={v}" for k_, v in cfg.items()),
                  partial(ours_cfg, {"kernel": "cuda"} | cfg), layers, xs, True, nbytes, bw, cub)  # fmt: skip
        del b, layers
        torch.cuda.empty_cache()


def act(bw: float, shapes: tuple[Any, ...] = GB.SHAPES, ms: tuple[int, ...] = (1, 16)) -> None:
    """Act-order: plain vs the default, x permuted first (Triton), permuted by `fg_permute_x` with the
    GEMM launched by PDL, and (M ≤ 4) the in-kernel gather."""
    for label, k_in, n_out in shapes:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} act: skipped (budget)")
            continue
        b = GB.Bench(k_in, n_out, ("plain", "act"))
        for m in ms:
            nbytes = GB.quant_bytes(k_in, n_out, 4) + m * (k_in + n_out) * 2
            runs: list[tuple[str, str, dict[str, Any] | None]] = [
                ("plain", "plain", None), ("act", "act", None), ("xperm", "act", {"kernel": "cuda", "xperm": True}),
                ("xperm+pdl", "act", {"kernel": "cuda", "xperm": True, "xperm_pdl": True}),
            ]  # fmt: skip
            if m <= 4:
                runs.append(("gather", "act", {"kernel": "cuda", "xperm": False}))
                runs.append(("xfull", "act", {"kernel": "cuda", "xperm": False, "xfull": True}))
                runs.append(
                    ("xfull+fold", "act", {"kernel": "cuda", "xperm": False, "xfull": True, "fold": True})
                )
            times = {}
            for name, kind, cfg in runs:
                layers = b.layers[kind]
                xs = b.xs(m, len(layers))
                fn = partial(ours_cfg, cfg) if cfg else (lambda lay, x: GB.ours(K, lay, x))
                times[name] = timed(
                    label, f"M={m} act {name} {cfg}", fn, layers, xs, True, nbytes, bw, float("nan")
                )
            p = times["plain"]
            log(
                f"ACT {label} M={m}: plain {p:.2f} | "
                + " | ".join(f"{n_} {t:.2f} ({t / p:.2f}x)" for n_, t in times.items() if n_ != "plain")
            )
        del b
        torch.cuda.empty_cache()


def candidates(bw: float, ms: tuple[int, ...], bits: int, shapes: tuple[Any, ...] = GB.SHAPES) -> None:
    """Plans for the default at small M: the small-M kernel with its K split over CTAs (cluster or ticket)
    or over 8 warps of one CTA, and the mid-M kernel (4 or 2 strips a CTA share x), each checked first."""
    for label, k_in, n_out in shapes:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} {bits}-bit candidates: skipped (budget)")
            continue
        b = GB.Bench(k_in, n_out, ("plain" if bits == 4 else "int8",))
        layers = b.layers["plain" if bits == 4 else "int8"]
        blocks = k_in // 128
        for m in ms:
            xs = b.xs(m, len(layers))
            nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
            mb = 3 if bits == 4 and m <= 8 else 2
            cfgs: list[dict[str, Any]] = [{}]  # the default dispatch
            for d in (1, 2, 4, 7, 8):
                if blocks % d:
                    continue
                for w in (4, 8):
                    for cl in (True, False) if 2 <= d <= 8 else (False,):
                        if (n_out // 64) * d * w > 8 * 132 * 4 or blocks // d < w:
                            continue
                        cfgs.append(
                            {
                                "mid": False,
                                "split_k": d,
                                "warps": w,
                                "cluster": cl,
                                "min_blocks": mb if w == 4 else 1,
                            }
                        )
            mid = launch_plan(m, n_out, k_in, bits, mid=True, forced=True)
            if mid is not None:
                cfgs.append(mid)
            small = launch_plan(m, n_out, k_in, bits, mid=False, forced=True) or {}
            w8 = {"mid": False, "split_k": max(1, small.get("split_k", 2) // 2), "warps": 8, "cluster": False,
                  "min_blocks": 1}  # fmt: skip
            cfgs += [c | {"fold": True} for c in ({"mid": False} | small, w8, w8 | {"cluster": w8["split_k"] > 1})
                     if c["split_k"] <= 8 or not c["cluster"]]  # fmt: skip
            precompile([(spec_of(m, k_in, bits, c), ()) for c in cfgs[1:]])
            cub = timed(
                label,
                f"M={m} cuBLAS",
                lambda lay, x: torch.matmul(x, lay.w),
                layers,
                xs,
                True,
                nbytes,
                bw,
                1.0,
            )
            rows = []
            for c in cfgs:
                name = f"M={m} {bits}-bit cand " + (" ".join(f"{k_}={v}" for k_, v in c.items()) or "default")
                fn = partial(ours_cfg, {"kernel": "cuda"} | c) if c else (lambda lay, x: GB.ours(K, lay, x))
                rows.append((timed(label, name, fn, layers, xs, True, nbytes, bw, cub), name))
            ok = sorted(r for r in rows if r[0] == r[0])
            log(f"CAND {label} {bits}-bit M={m}: cuBLAS {cub:.2f} | default {rows[0][0]:.2f} | best {ok[0][0]:.2f} {ok[0][1]}"
                + (f" | 2nd {ok[1][0]:.2f} {ok[1][1]}" if len(ok) > 1 else ""))  # fmt: skip
        del b, layers
        torch.cuda.empty_cache()


def table(bw: float, ms: tuple[int, ...] = (1, 4, 16)) -> None:
    """The default dispatch on the four shapes: plain 4-bit, act-order, 8-bit, against cuBLAS fp16."""
    for label, k_in, n_out in GB.SHAPES:
        if time.time() - T0 > BUDGET_S:
            log(f"  {label} table: skipped (budget)")
            continue
        b = GB.Bench(k_in, n_out, ("plain", "act", "int8"))
        for m in ms:
            t: dict[str, float] = {}
            for name, kind in (("cuBLAS", "plain"), ("plain", "plain"), ("act", "act"), ("8-bit", "int8")):
                layers = b.layers[kind]
                bits = 8 if kind == "int8" else 4
                nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
                fn = (lambda lay, x: torch.matmul(x, lay.w)) if name == "cuBLAS" else partial(ours_cfg, None)
                t[name] = timed(label, f"M={m} {name}", fn, layers, b.xs(m, len(layers)), True, nbytes, bw,
                                t.get("cuBLAS", float("nan")))  # fmt: skip
            hbm = (GB.quant_bytes(k_in, n_out, 4) + m * (k_in + n_out) * 2) / (t["plain"] * 1e-6) / bw
            log(f"TABLE {label} M={m}: cuBLAS {t['cuBLAS']:.2f} | plain {t['plain']:.2f} ({hbm:.0%} HBM, "
                f"{t['cuBLAS'] / t['plain']:.2f}x) | act {t['act']:.2f} ({t['act'] / t['plain']:.2f}x plain) | "
                f"8-bit {t['8-bit']:.2f} ({t['cuBLAS'] / t['8-bit']:.2f}x cuBLAS)")  # fmt: skip
        del b
        torch.cuda.empty_cache()


def ncu_once() -> None:
    """Eager launches on qkv M=1, two each (the first compiles): the default, then with 4 buffers of words
    (ncu profiles launches 2..4: `--launch-skip 1 --launch-count 3`)."""
    lay = GB.make_layer(4096, 6144)
    x = torch.randn(1, 4096, device="cuda", dtype=torch.float16)
    deep = {"kernel": "cuda", "split_k": 2, "warps": 4, "cluster": True, "min_blocks": 2, "bufs": 4}
    for cfg in (None, None, deep, deep):
        GB.ours(K, lay, x, cfg)
    torch.cuda.synchronize()


def main() -> int:
    if "--ncu" in sys.argv:
        ncu_once()
        return 0
    log(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | {C.cuda_path_status()}")
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    qkv, o_proj, gate_up, down = GB.SHAPES
    plan: list[tuple[str, Callable[[], None]]] = [
        ("floor", lambda: floors(bw)),  # most wanted first: a budget cut drops the rest
        ("m1", lambda: small(bw, (1,), 4, (qkv,))),
        ("m16", lambda: mid16(bw, (qkv,))),
        ("act", lambda: act(bw, (qkv,), (16,))),
        ("int8", lambda: small(bw, (1,), 8, (qkv,))),
        ("m1", lambda: small(bw, (1,), 4, (down, gate_up, o_proj))),
        ("m16", lambda: mid16(bw, (gate_up, down, o_proj))),
        ("int8", lambda: small(bw, (1,), 8, (down, gate_up, o_proj))),
        ("act", lambda: act(bw, (down, gate_up, o_proj), (16, 4))),
        ("m4", lambda: small(bw, (4,), 4, (qkv, down))),
        ("act14", lambda: act(bw, GB.SHAPES, (1, 4))),  # run C: the xfull gather
        ("cand", lambda: candidates(bw, (1, 4), 4)),
        ("cand8", lambda: candidates(bw, (1,), 8)),
        ("table", lambda: table(bw)),  # run D: the default dispatch after the plan changes
    ]
    failed = run_sections(plan, only, log, LINES, "gptq_cuda_probe.txt")
    print(
        "\n==== SUMMARY ====\n"
        + "\n".join(line for line in LINES if line.startswith(("BEST", "FLOOR", "ACT", "CAND", "TABLE")))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
