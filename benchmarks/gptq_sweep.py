"""Variant sweep of the repacked-layout GPTQ kernels (`gptq_tiled.py`) on one GPU call.

`python benchmarks/gptq_sweep.py [--only m1,m4,...]`: for the four Llama-3-8B shapes, each kernel
variant (split-K, unroll, warps, stages, ticket vs two-launch reduce, tiles, scale placement) is
checked against x @ W on random data, then timed as CUDA-graph replays with the weights rotated
so that L2 stays cold. Prints a table per (shape, M) and writes it to $OUT/gptq_sweep.txt; the
winners are what `gptq_tiled.plan` uses.
"""

# ruff: noqa: B023, E731, N803, N812
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gptq_sweep_kit import BUDGET_S, LINES, T0, K, log  # noqa: E402
from gptq_sweep_mid import mid_grids, mid_m, scale_fold  # noqa: E402
from gpu import copy_bandwidth, graph_us, run_sections  # noqa: E402

from fusegraph.runtime.kernels import gptq_tiled as T  # noqa: E402
from fusegraph.runtime.kernels import gptq_tiled_kernels as TK  # noqa: E402


def _nat(bm: int, bn: int, split: int, nw: int, ns: int = 3) -> dict[str, Any]:
    return {"kernel": "nat", "block_m": bm, "block_n": bn, "split_k": split, "num_warps": nw, "num_stages": ns,
            "unroll": 1, "ticket": True}  # fmt: skip


def variants(
    m: int, k_in: int, n_out: int, bits: int, act: bool = False, wide: bool | str = False
) -> list[dict[str, Any]]:
    """wide="cuda": the CUDA kernel's variants (`cuda_variants`). Else the default plan first, then L2 prefetch / PDL, split and tile variants (sweep 1 also tried a
    swapped-operand tile and sweep 2 a rolling per-step L2 prefetch: both slower, since removed)."""
    if wide in ("cuda", "cudapf", "cudatma"):
        return cuda_variants(m, k_in, n_out, bits, prefetch=wide == "cudapf", tma=wide == "cudatma")
    base = T.plan(m, n_out, k_in, 8 if bits == 8 else 4, torch.device("cuda"), act)
    out = [dict(base)]
    blocks = k_in // 128
    if base["kernel"] == "gemv":
        off = base | {"pf": 0, "pdl": 0}
        pf64 = off | {"pf": 1, "pf_lines": 64}
        out += [off, off | {"pdl": 1}, off | {"pf": 1}, pf64 | {"pdl": 2}, off | {"pf": 1, "pdl": 2}]
        if wide:
            for split in (base["split_k"] // 2, base["split_k"] * 2):
                if split >= 1 and blocks % split == 0 and (blocks // split) % 2 == 0:
                    out += [
                        off | {"split_k": split, "unroll": 2},
                        pf64 | {"split_k": split, "unroll": 2, "pdl": 2},
                    ]
    else:
        sp = max(1, min(16, 3 * 132 // max(1, (n_out // 64) * triton.cdiv(m, 64))))
        sp = max(d for d in range(1, sp + 1) if blocks % d == 0)
        if m <= 16:
            out += [
                _nat(16, 64, base.get("split_k", 4), 4),
                _nat(16, 128, max(1, base.get("split_k", 4) // 2), 4),
            ]
        elif m <= 64:
            out += [_nat(64, 64, sp, 4), _nat(64, 128, max(1, sp // 2), 4), _nat(64, 128, max(1, sp // 2), 8)]
        else:
            out += [_nat(128, 128, 1, 8), _nat(128, 128, 1, 8, 4), _nat(64, 128, 1, 4), _nat(128, 256, 1, 8)]
    seen, uniq = set(), []
    for v in out:
        key = tuple(sorted(v.items()))
        if key not in seen:
            seen.add(key)
            uniq.append(v)
    return uniq


def sweep(shapes: Sequence[tuple[str, int, int]], ms: Sequence[int], kinds: tuple[str, ...] = ("plain",), bw: float = 4.2e12,
          dtype: torch.dtype = torch.float16, wide: bool | str = False) -> None:  # fmt: skip
    for label, k_in, n_out in shapes:
        b = GB.Bench(k_in, n_out, kinds)
        for m in ms:
            for kind in kinds:
                layers = b.layers[kind]
                bits = layers[0].bits
                xs = b.xs(m, len(layers), dtype)
                tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
                try:
                    t_cub, _ = GB.checked_time(
                        "cuBLAS", lambda lay, x: torch.matmul(x, lay.w), layers, xs, graph_us
                    )
                except Exception as exc:  # noqa: BLE001
                    t_cub = float("nan")
                    log(f"cuBLAS failed {exc}")
                res = []
                for cfg in variants(m, k_in, n_out, bits, kind == "act", wide):
                    if time.time() - T0 > BUDGET_S:
                        log(f"  {label} M={m} {kind} {cfg}: skipped (budget)")
                        continue
                    try:
                        us, rel = GB.checked_time(
                            str(cfg), lambda lay, x: GB.ours(K, lay, x, cfg), layers, xs, graph_us, tol
                        )
                        res.append((us, rel, cfg))
                    except Exception as e:  # noqa: BLE001
                        log(f"  {label} M={m} {kind} {cfg}: FAILED {type(e).__name__}: {str(e)[:300]}")
                res.sort(key=lambda r: r[0])
                nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
                for us, rel, cfg in res:
                    log(f"  {label} M={m} {kind}{'' if dtype == torch.float16 else ' bf16'} {us:7.2f} us ({nbytes / (us * 1e-6) / bw:4.0%} HBM, "
                        f"{t_cub / us:4.2f}x cuBLAS) err {rel:.1e} {cfg}")  # fmt: skip
                first = variants(m, k_in, n_out, bits, kind == "act", wide)[0]
                if res:
                    log(f"BEST {label} {k_in}x{n_out} M={m} {kind}{'' if dtype == torch.float16 else ' bf16'}: {res[0][0]:.2f} us, cuBLAS {t_cub:.2f} us "
                        f"({t_cub / res[0][0]:.2f}x), default {next((u for u, _, c in res if c == first), float('nan')):.2f}, "
                        f"{res[0][2]}")  # fmt: skip
        del b
        torch.cuda.empty_cache()


@triton.jit
def _null_kernel(out_ptr):  # type: ignore[no-untyped-def]
    tl.store(out_ptr + tl.program_id(0), 1.0)


@triton.jit  # type: ignore[untyped-decorator]
def _read_kernel(src, out_ptr, words, BLOCK: tl.constexpr, PF_LINES: tl.constexpr):  # type: ignore[no-untyped-def]
    """Sum one contiguous run of `words` int32 per program (a pure weight stream, no math)."""
    run = src + tl.program_id(0).to(tl.int64) * words
    if PF_LINES > 0:
        TK._prefetch_l2(run, words, PF_LINES)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for off in range(0, words, BLOCK):
        acc += tl.load(run + off + tl.arange(0, BLOCK))
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc, 0).to(tl.float32))


def floors(bw: float) -> None:
    """What one launch costs here: an empty kernel, and a pure read of each shape's int4 weight bytes
    over 3 programs an SM (with and without the L2 prefetch), as CUDA-graph replays, L2 cold."""
    out = torch.empty(1 << 16, device="cuda")
    log(f"null kernel (1 program): {graph_us([lambda: _null_kernel[(1,)](out)]):.2f} us; "
        f"(396 programs): {graph_us([lambda: _null_kernel[(396,)](out)]):.2f} us")  # fmt: skip
    for label, k_in, n_out in GB.SHAPES:
        words = k_in * n_out // 8
        copies = GB.copies_for(words * 4)
        bufs = [
            torch.randint(-(2**31), 2**31 - 1, (words,), device="cuda", dtype=torch.int32)
            for _ in range(copies)
        ]
        for progs, block, nw in ((396, 1024, 4), (396, 4096, 4), (396, 4096, 8), (528, 4096, 4)):
            per = words // progs // block * block
            read = _read_kernel[(progs,)]
            us = graph_us([partial(read, b, out, per, BLOCK=block, PF_LINES=0, num_warps=nw) for b in bufs])
            log(f"  read {label} {per * progs * 4 / 1e6:.1f} MB, {progs} programs, {block} words a step, {nw} warps: "
                f"{us:6.2f} us ({per * progs * 4 / (us * 1e-6) / bw:4.0%} of copy)")  # fmt: skip
        del bufs


def neighbor(bw: float) -> None:
    """The M=1 GEMV after an ordinary kernel that writes its x (as in a model): graph time of
    (x = x0·1.0001; x @ W) minus that of the elementwise kernel alone, with and without PDL."""
    for label, k_in, n_out in GB.SHAPES:
        b = GB.Bench(k_in, n_out, ("plain",))
        layers = b.layers["plain"]
        x0 = b.xs(1, len(layers))
        xb = [torch.empty_like(x) for x in x0]

        def mul(i: int) -> torch.Tensor:
            return torch.mul(x0[i], 1.0001, out=xb[i])

        def pair(i: int, cfg: dict[str, Any]) -> torch.Tensor:
            mul(i)
            return GB.ours(K, layers[i], xb[i], cfg)

        alone = graph_us([partial(mul, i) for i in range(len(layers))])
        base = T.plan(1, n_out, k_in, 4, torch.device("cuda"))
        off = base | {"pf": 0, "pdl": 0}
        for cfg in (off, off | {"pdl": 1},
                    off | {"pf": 1, "pf_lines": 64, "pdl": 2}):  # fmt: skip
            both = graph_us([partial(pair, i, cfg) for i in range(len(layers))])
            y = GB.ours(K, layers[0], xb[0], cfg)
            ref = xb[0].float() @ layers[0].w.float()
            err = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
            log(f"  after-mul {label} M=1 {both - alone:6.2f} us (pair {both:6.2f}, mul alone {alone:5.2f}) err {err:.1e} "
                f"pf={cfg['pf']} pdl={cfg['pdl']}")  # fmt: skip
        del b
        torch.cuda.empty_cache()


def act_order(bw: float) -> None:
    """Act-order: x permuted once (one Triton launch) vs gathered through perm in the kernel, and
    what a column permutation of x costs alone (ours vs torch's index_select), as graph replays."""
    for m, k_in in ((1, 4096), (16, 4096), (1, 14336)):
        x = torch.randn(m, k_in, device="cuda", dtype=torch.float16)
        perm = torch.randperm(k_in, device="cuda").to(torch.int32)
        ours_us = graph_us([lambda: T._permute_cols(x, perm)])
        torch_us = graph_us([lambda: x.index_select(1, perm)])
        log(f"  permute x [{m}, {k_in}]: ours {ours_us:5.2f} us, index_select {torch_us:5.2f} us")
    for ms, shapes in (((1,), GB.SHAPES), ((16,), [GB.SHAPES[0], GB.SHAPES[1], GB.SHAPES[3]])):
        for label, k_in, n_out in shapes:
            b = GB.Bench(k_in, n_out, ("act",))
            layers = b.layers["act"]
            for m in ms:
                xs = b.xs(m, len(layers))
                base = T.plan(m, n_out, k_in, 4, torch.device("cuda"), True)
                for cfg in (base, base | {"permute_x": True}, base | {"permute_x": False}):
                    us, err = GB.checked_time(
                        str(cfg), lambda lay, x: GB.ours(K, lay, x, cfg), layers, xs, graph_us
                    )
                    log(f"  act {label} M={m} {us:6.2f} us err {err:.1e} {cfg}")
            del b
            torch.cuda.empty_cache()


def small_m(bw: float) -> None:
    """M = 4 and 16: the default tiles against the row-order tiles ("nat") with a split-K that fills
    about three programs an SM."""
    for label, k_in, n_out in GB.SHAPES:
        b = GB.Bench(k_in, n_out, ("plain",))
        layers = b.layers["plain"]
        for m in (4, 16):
            xs = b.xs(m, len(layers))
            t_cub, _ = GB.checked_time("cuBLAS", lambda lay, x: torch.matmul(x, lay.w), layers, xs, graph_us)
            blocks = k_in // 128
            cfgs = [T.plan(m, n_out, k_in, 4, torch.device("cuda"))]
            for bn in (64, 128):
                tiles = n_out // bn
                split = max((d for d in range(1, 17) if blocks % d == 0 and tiles * d <= 3 * 132), default=1)
                cfgs += [_nat(16, bn, split, 4), _nat(16, bn, max(1, split // 2), 4)]
            for cfg in cfgs:
                us, err = GB.checked_time(
                    str(cfg), lambda lay, x: GB.ours(K, lay, x, cfg), layers, xs, graph_us
                )
                log(
                    f"  small {label} M={m} {us:6.2f} us ({t_cub / us:4.2f}x cuBLAS {t_cub:5.1f}) err {err:.1e} {cfg}"
                )
        del b
        torch.cuda.empty_cache()


def cuda_variants(
    m: int, k_in: int, n_out: int, bits: int, prefetch: bool = False, tma: bool = False
) -> list[dict[str, Any]]:
    """The CUDA kernel (`gptq_cuda.py`): its default plan first, then splits around it (cluster or
    ticket reduction), 8 warps, register caps for 2-4 CTAs an SM."""
    from fusegraph.runtime.kernels.gptq_plan import cuda_small_m_plan

    base = cuda_small_m_plan(m, n_out, k_in, bits, 132, forced=True)
    if base is None:
        return []
    blocks, tiles = k_in // 128, n_out // 64
    out = [{"kernel": "cuda"} | base]
    if tma:  # the default plan streaming through a 2-4 stage bulk-copy ring, with 3 or 4 CTAs an SM
        return out + [out[0] | {"tma": s, "min_blocks": b} for s in (2, 3, 4) for b in (3, 4)]
    if prefetch:  # the default plan with each warp's block 1, 2 or 4 ahead asked of L2; the other reduction
        return out + [out[0] | {"l2pf": d} for d in (1, 2, 4)] + [out[0] | {"cluster": not base["cluster"]}]
    for d in (
        d for d in range(1, 17) if blocks % d == 0 and 132 <= tiles * d <= 8 * 132 and m * blocks // d <= 256
    ):
        v = {"kernel": "cuda", "split_k": d, "warps": 4, "cluster": False, "min_blocks": base["min_blocks"]}
        out += [v, v | {"min_blocks": 4}, v | {"warps": 8, "min_blocks": 1}, v | {"min_blocks": 2}]
        if 1 < d <= 8:
            out.append(v | {"cluster": True})
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for v in out:
        unique.setdefault(tuple(sorted(v.items())), v)
    return list(unique.values())


def main() -> int:
    log(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {__import__('triton').__version__}"
    )
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    qkv = [GB.SHAPES[0]]
    plan: list[tuple[str, Callable[[], None]]] = [
        ("floors", lambda: floors(bw)),
        ("act", lambda: act_order(bw)),
        ("small", lambda: small_m(bw)),
        ("m1", lambda: sweep(GB.SHAPES, (1,), bw=bw, wide=True)),
        ("neighbor", lambda: neighbor(bw)),
        ("m16", lambda: sweep([GB.SHAPES[0], GB.SHAPES[2]], (16,), bw=bw)),
        ("m64", lambda: sweep([GB.SHAPES[0], GB.SHAPES[2]], (64,), bw=bw)),
        ("big", lambda: sweep([GB.SHAPES[0], GB.SHAPES[2]], (256, 1024), bw=bw)),
        ("m4", lambda: sweep(qkv, (4,), bw=bw)),
        ("m256", lambda: sweep(qkv, (256, 1024), bw=bw)),
        ("m1x", lambda: sweep(qkv, (1,), ("act", "int8"), bw=bw)),
        ("bf16", lambda: sweep(qkv, (1, 16), bw=bw, dtype=torch.bfloat16)),
        ("cuda", lambda: sweep(GB.SHAPES, (1, 16), bw=bw, wide="cuda")),
        ("cuda4", lambda: sweep(GB.SHAPES, (4,), bw=bw, wide="cuda")),
        ("cudaq", lambda: sweep([GB.SHAPES[0], GB.SHAPES[2]], (1, 16), bw=bw, wide="cuda")),
        ("cudapf", lambda: sweep(GB.SHAPES, (1, 16), bw=bw, wide="cudapf")),
        ("cudatma", lambda: sweep(GB.SHAPES, (1, 16), bw=bw, wide="cudatma")),
        ("midm", lambda: mid_m(bw)),
        ("grids", lambda: mid_grids(bw)),
        ("sfold", lambda: scale_fold(bw)),
    ]
    failed = run_sections(plan, only, log, LINES, "gptq_sweep.txt")
    print(
        "\n==== BEST ====\n"
        + "\n".join(line for line in LINES if line.startswith(("BEST", "MID", "GRID", "SFOLD")))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
