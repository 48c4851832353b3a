"""Variant sweep of the repacked-layout GPTQ kernels (`gptq_tiled.py`) on one GPU call.

`python benchmarks/gptq_sweep.py [--only m1,m4,...]`: for the four Llama-3-8B shapes, each kernel
variant (split-K, unroll, warps, stages, ticket vs two-launch reduce, tiles, scale placement) is
checked against x @ W on random data, then timed as CUDA-graph replays with the weights rotated
so that L2 stays cold. Prints a table per (shape, M) and writes it to $OUT/gptq_sweep.txt; the
winners are what `gptq_tiled.plan` uses.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gpu import copy_bandwidth, graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_tiled as T  # noqa: E402

LINES: list[str] = []
T0 = time.time()
BUDGET_S = float(os.environ.get("SWEEP_BUDGET_S", "1e9"))


def log(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


class K:
    tiled = staticmethod(T.gptq_tiled_matmul)


def variants(m: int, k_in: int, n_out: int, bits: int, act: bool = False) -> list[dict]:
    base = T.plan(m, n_out, k_in, 8 if bits == 8 else 4, torch.device("cuda"))
    out = [dict(base)]
    blocks = k_in // 128
    if base["kernel"] == "gemv":
        for split in (base["split_k"] // 2, base["split_k"], base["split_k"] * 2):
            if split < 1 or blocks % split or split > 32:
                continue
            per = blocks // split
            for u in (1, 2) if bits == 8 else (2, 4, 8):
                if per % u:
                    continue
                for nw in (2, 4):
                    out.append(base | {"split_k": split, "unroll": u, "num_warps": nw})
            if per % 2 == 0:
                out.append(base | {"split_k": split, "unroll": 2, "num_warps": 4, "prefetch": True})
        out.append(base | {"ticket": False})
        if act:
            out.append(base | {"permute_x": True})
    elif base["kernel"] == "mma":
        sp = base["split_k"]
        for split in (sp // 2, sp, sp * 2):
            if split < 1 or blocks % split:
                continue
            for u in (1, 2, 4):
                if (blocks // split) % u == 0:
                    out.append(base | {"split_k": split, "unroll": u})
        out += [base | {"ticket": False}, base | {"num_stages": 2}]
        if m >= 32:
            out += [base | {"block_m": 16, "block_n": 64, "split_k": sp, "unroll": 2},
                    base | {"block_m": 32, "block_n": 64, "split_k": sp, "unroll": 2},
                    base | {"block_m": 64, "block_n": 64, "num_warps": 8}]  # fmt: skip
    else:
        out += [base | {"block_n": 64}, base | {"block_n": 256}]
    seen, uniq = set(), []
    for v in out:
        key = tuple(sorted(v.items()))
        if key not in seen:
            seen.add(key)
            uniq.append(v)
    return uniq


def sweep(shapes, ms, kinds=("plain",), bw: float = 4.2e12, dtype: torch.dtype = torch.float16) -> None:
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
                for cfg in variants(m, k_in, n_out, bits, kind == "act"):
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
                first = variants(m, k_in, n_out, bits, kind == "act")[0]
                if res:
                    log(f"BEST {label} {k_in}x{n_out} M={m} {kind}{'' if dtype == torch.float16 else ' bf16'}: {res[0][0]:.2f} us, cuBLAS {t_cub:.2f} us "
                        f"({t_cub / res[0][0]:.2f}x), default {next((u for u, _, c in res if c == first), float('nan')):.2f}, "
                        f"{res[0][2]}")  # fmt: skip
        del b
        torch.cuda.empty_cache()


def main() -> int:
    log(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {__import__('triton').__version__}"
    )
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    qkv = [GB.SHAPES[0]]
    plan = [
        ("m1", lambda: sweep(GB.SHAPES, (1,), bw=bw)),
        ("m16", lambda: sweep([GB.SHAPES[0], GB.SHAPES[2]], (16,), bw=bw)),
        ("m64", lambda: sweep(qkv, (64,), bw=bw)),
        ("m4", lambda: sweep(qkv, (4,), bw=bw)),
        ("m256", lambda: sweep(qkv, (256, 1024), bw=bw)),
        ("m1x", lambda: sweep(qkv, (1,), ("act", "int8"), bw=bw)),
        ("bf16", lambda: sweep(qkv, (1, 16), bw=bw, dtype=torch.bfloat16)),
    ]
    failed = 0
    for name, fn in plan:
        if only and name not in only:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001
            failed += 1
            log(f"[{name}] FAILED:\n{traceback.format_exc()}")
    if out := os.environ.get("OUT"):
        Path(out, "gptq_sweep.txt").write_text("\n".join(LINES) + "\n")
    print("\n==== BEST ====\n" + "\n".join(line for line in LINES if line.startswith("BEST")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
