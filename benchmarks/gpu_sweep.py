"""Kernel-variant sweep on one GPU call: the GPTQ matmul paths and split-KV paged attention.

`python benchmarks/gpu_sweep.py [--only gptq,dequant,act-order,attention,attention decode]` on a CUDA machine. Every variant is checked against a torch
reference on fresh random data before it is timed. Times are CUDA-graph replays (REPS calls
captured in one graph, the weights rotated over enough copies to overflow L2, median of
replays / REPS), so host launch overhead is out; do_bench of one eager call (launch included)
is printed beside the chosen configs. The best config per shape is printed in a table last and
written to $OUT/gpu_sweep.txt; they are what `gptq_plan.pick_config` and the attention
default use. The decode attention rows also time the default plan with its splits merged by the combine kernel
("kernel") beside the default (which merges in place where `paged_attention_plan.merges_in_place` says);
ATTN_DEFAULT_ONLY=1 times only those two.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu import bench_us, graph_us, random_gptq, rel_err, run_sections  # noqa: E402

from fusegraph.runtime.kernels import gptq_matmul as G  # noqa: E402
from fusegraph.runtime.kernels import paged_attention as PA  # noqa: E402

DEV = "cuda"
LINES: list[str] = []
T0 = time.time()
BUDGET_S = float(os.environ.get("SWEEP_BUDGET_S", "1e9"))  # configs after this many seconds are skipped


def log(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


# ---- GPTQ ----------------------------------------------------------------------------------------------

K_IN, N_OUT, SETS = 4096, 6144, 6


def _mma(bm: int, bn: int, split: int, nw: int = 4, ns: int = 3, swap: int = 0) -> dict[str, Any]:
    return {"kernel": "mma", "block_m": bm, "block_n": bn, "nibble_dots": 0, "split_k": split, "num_warps": nw,
            "num_stages": ns, "swap_ab": swap}  # fmt: skip


def _gemv(bn: int, split: int, nw: int = 4, ns: int = 3) -> dict[str, Any]:
    return {"kernel": "gemv", "x_vec": 1, "block_n": bn, "split_k": split, "num_warps": nw, "num_stages": ns}


def _dq(bk: int = 64, bn: int = 256, nw: int = 4) -> dict[str, Any]:
    return {"kernel": "dequant", "dq_block_k": bk, "dq_block_n": bn, "dq_num_warps": nw}


def gptq_configs(m: int) -> list[dict[str, Any]]:
    """Variants around the 2026-11-27 winners (the first of each list is the previous default), plus
    the swapped-operand mma (W^T as wgmma's register A operand) and the dequantize-then-cuBLAS path."""
    # Third call (2026-11-27): ncu showed the GEMV and the M=16 mma latency-bound (119 / 168 registers a
    # thread, 17% / 16% achieved occupancy, 32% / 23% of DRAM); BLOCK_K 64 (half the unpacked tile)
    # and more split-K programs. The first entry is the previous default, the second the new one.
    if m == 1:
        return [_gemv(128, 8) | {"reduce_block": 256}, _bk(_gemv(128, 16), 64), _bk(_gemv(128, 16), 64) | {"reduce_block": 256}, _bk(_gemv(128, 8), 64), _bk(_gemv(128, 32), 64),
                _bk(_gemv(128, 16, 4, 4), 64), _bk(_gemv(128, 16, 4, 2), 64), _bk(_gemv(64, 16, 2), 64),
                _bk(_gemv(128, 16), 32), _bk(_gemv(256, 16, 8), 64)]  # fmt: skip
    if m <= 16:
        return [_mma(16, 128, 8) | {"reduce_block": 256}, _bk(_mma(16, 128, 16), 64), _bk(_mma(16, 128, 8), 64), _bk(_mma(16, 128, 32), 64),
                _bk(_mma(16, 128, 16, 4, 4), 64), _bk(_mma(16, 128, 16, 4, 2), 64), _bk(_mma(16, 64, 16), 64),
                _mma(16, 64, 16), _bk(_mma(16, 64, 32), 64)]  # fmt: skip
    if m == 32:
        return [{"kernel": "general"}, _bk(_mma(32, 128, 8), 64), _bk(_mma(32, 128, 4), 64), _bk(_mma(32, 64, 8), 64),
                {"kernel": "general", "block_k": 64}]  # fmt: skip
    if m <= 128:
        return ([_mma(64, 128, 4)] if m == 128 else []) + [_mma(64, 64, 4), _bk(_mma(64, 64, 4), 64), _bk(_mma(64, 64, 8), 64), _bk(_mma(64, 128, 4), 64),
                _bk(_mma(64, 64, 4, 4, 4), 64), _bk(_mma(32, 64, 8), 64), _bk(_mma(64, 128, 8, 8, 3), 64)]  # fmt: skip
    return [_mma(64, 128, 1), _dq(128, 256)]


def _bk(cfg: dict[str, Any], bk: int) -> dict[str, Any]:
    return cfg | {"block_k": bk}


def call(t: dict[str, Tensor], x: Tensor, cfg: dict[str, Any] | None = None, g_idx: Tensor | None = None,
         act_order: str = "permute") -> Tensor:  # fmt: skip
    return G.gptq_matmul_triton(x, t["qweight"], t["scales"], t["qzeros"], g_idx, bits=4, group_size=128,
                                zero_format="v1", desc_act=None if g_idx is not None else False,
                                act_order=act_order, config=cfg)  # fmt: skip


def sweep_gptq(best: dict[int, tuple[float, dict[str, Any]]]) -> None:
    sets = [random_gptq(K_IN, N_OUT) for _ in range(SETS)]
    dense = [w for _, w in sets]
    for m in (1, 4, 16, 32, 64, 128, 512):
        xs = [torch.randn(m, K_IN, device=DEV, dtype=torch.float16) for _ in range(SETS)]
        refs = [xs[i].float() @ dense[i].float() for i in range(2)]
        t_cublas = graph_us([partial(torch.matmul, xs[i], dense[i]) for i in range(SETS)])
        results = []
        for cfg in gptq_configs(m):
            if time.time() - T0 > BUDGET_S:
                log(f"  M={m} {cfg}: skipped (sweep time budget)")
                continue
            try:
                errs = []
                for i in range(2):
                    y = call(sets[i][0], xs[i], cfg)
                    errs.append(rel_err(y, refs[i]))
                if not max(errs) < 5e-3:
                    log(f"  M={m} {cfg}: WRONG err {max(errs):.3g}")
                    continue
                us = graph_us([partial(call, sets[i][0], xs[i], cfg) for i in range(SETS)])
                results.append((us, cfg))
            except Exception as err:  # noqa: BLE001
                log(f"  M={m} {cfg}: FAILED {type(err).__name__}: {str(err)[:300]}")
        results.sort(key=lambda r: r[0])
        print(f"  M={m} all (us, graph):", "; ".join(f"{u:.1f} {c}" for u, c in results), flush=True)
        old = next((u for u, c in results if c == gptq_configs(m)[0]), float("nan"))
        if not results:
            continue
        bu, bc = results[0]
        default_us = graph_us([partial(call, sets[i][0], xs[i]) for i in range(SETS)])
        db_default = bench_us(lambda: call(sets[0][0], xs[0]))
        db_old = bench_us(lambda: call(sets[0][0], xs[0], gptq_configs(m)[0]))
        best[m] = (bu, bc)
        log(f"gptq M={m:<4} graph: best {bu:6.1f} us {bc} | default {default_us:6.1f} | prev default {old:6.1f} | cuBLAS "
            f"{t_cublas:6.1f} ({t_cublas / bu:4.2f}x best) | do_bench default {db_default:6.1f} old {db_old:6.1f}")  # fmt: skip
        for kind in ("gemv", "mma", "swap", "dequant"):
            kr = [r for r in results if (r[1].get("swap_ab") and kind == "swap") or
                  (r[1]["kernel"] == kind and not r[1].get("swap_ab"))]  # fmt: skip
            if kr:
                log(f"    best {kind}: {kr[0][0]:6.1f} us {kr[0][1]}")


def time_dequant_pass() -> None:
    """The prefill path's dequantization pass alone: bytes (int4 + scales + zeros read, fp16 written) / time."""
    sets = [random_gptq(K_IN, N_OUT) for _ in range(SETS)]
    nbytes = (
        K_IN * N_OUT // 2
        + K_IN * N_OUT * 2
        + sets[0][0]["scales"].numel() * 2
        + sets[0][0]["qzeros"].numel() * 4
    )
    for cfg in (_dq(), _dq(128, 256), _dq(64, 128), _dq(128, 256, 8)):

        def fn(i: int, cfg: dict[str, Any] = cfg) -> Tensor:
            return G.dequantize_weight(sets[i][0]["qweight"], sets[i][0]["scales"], sets[i][0]["qzeros"], None,
                                       bits=4, group_size=128, zero_format="v1", clip=None, dtype=torch.float16,
                                       config=cfg)  # fmt: skip

        err = rel_err(fn(0), sets[0][1].float())
        us = graph_us([partial(fn, i) for i in range(SETS)])
        log(f"dequant pass {cfg}: {us:6.1f} us, {nbytes / (us * 1e-6) / 1e12:4.2f} TB/s (err {err:.2g})")


def sweep_act_order() -> None:
    sets = [random_gptq(K_IN, N_OUT, act_order=True) for _ in range(SETS)]
    for m in (1, 16, 256, 512):
        if time.time() - T0 > BUDGET_S:
            continue
        xs = [torch.randn(m, K_IN, device=DEV, dtype=torch.float16) for _ in range(SETS)]
        row = []
        for mode in ("permute", "gather"):
            errs = [rel_err(call(sets[i][0], xs[i], g_idx=sets[i][0]["g_idx"], act_order=mode),
                            xs[i].float() @ sets[i][1].float()) for i in range(2)]  # fmt: skip
            us = graph_us([partial(call, sets[i][0], xs[i], g_idx=sets[i][0]["g_idx"], act_order=mode)
                           for i in range(SETS)])  # fmt: skip
            row.append(f"{mode} {us:6.1f} us (err {max(errs):.2g})")
        log(f"act-order M={m:<4} graph: " + " | ".join(row))


# ---- paged attention -----------------------------------------------------------------------------------


def sweep_attention(batch: int = 32, ctx: int = 2048, ragged: bool = True) -> None:
    """Decode attention (one query row a sequence, Llama-3-8B heads, fp16) over key splits and tiles, each checked
    against SDPA on the gathered cache; the cache rotated over copies past L2 (as in a model, where each
    layer's cache is cold). `ragged`: every third sequence holds a random context; else each holds `ctx` keys and adds
    one (a decode step of equal contexts)."""
    h, hkv, d, ps = 32, 8, 128, 128
    pages = ctx // ps + 1  # the lookup table's capacity past the context, as the model's max_seq_len gives it
    lut = torch.randperm(batch * pages, device=DEV).reshape(batch, pages).to(torch.int32)
    kv_bytes = batch * pages * 2 * ps * hkv * d * 2
    kvs = [torch.randn(batch * pages, 2, 1, ps, hkv, d, device=DEV, dtype=torch.float16)
           for _ in range(max(1, -(-(160 << 20) // kv_bytes)))]  # fmt: skip
    kv = kvs[0]
    lens = torch.full((batch,), ctx - 1 if ragged else ctx, device=DEV, dtype=torch.int32)
    if ragged:
        lens[1::3] = torch.randint(1, ctx - 1, (len(lens[1::3]),), device=DEV, dtype=torch.int32)
    ro = torch.arange(batch + 1, device=DEV, dtype=torch.int32)
    q = torch.randn(batch, h, d, device=DEV, dtype=torch.float16)
    # reference: gather each sequence's cache, SDPA per sequence in fp32
    kk = kv[lut.long(), 0, 0].reshape(batch, pages * ps, hkv, d)
    vv = kv[lut.long(), 1, 0].reshape(batch, pages * ps, hkv, d)
    ref = torch.empty(batch, h, d, device=DEV)
    for b in range(batch):
        n = int(lens[b]) + 1
        ref[b] = F.scaled_dot_product_attention(
            q[b].float()[:, None], kk[b, :n].float().transpose(0, 1), vv[b, :n].float().transpose(0, 1),
            enable_gqa=True)[:, 0]  # fmt: skip
    floor_bytes = int((lens.long() + 1).sum()) * hkv * d * 2 * 2
    res = []
    configs = ((64, 2, 4), (128, 2, 4), (64, 3, 4), (64, 4, 4), (128, 2, 8))
    grid = (
        (None, "kernel")
        if os.environ.get("ATTN_DEFAULT_ONLY")
        else (1, 2, 4, 8, 12, 17, 24, 34, None, "kernel")
    )
    for splits in grid:  # None: the default plan; "kernel": the same, its splits merged by the combine kernel
        for bn, ns, nw in configs if isinstance(splits, int) else ((None, 2, 4),):

            def fn(kv: Tensor = kv) -> Tensor:
                return PA.paged_attention_triton(q, ro, kv, lens, lut, layer_idx=0, scale=d**-0.5,
                                                 num_splits=splits if isinstance(splits, int) else None, block_n=bn,
                                                 num_stages=ns, num_warps=nw,
                                                 merge_in_place=False if splits == "kernel" else None)  # fmt: skip

            try:
                err = rel_err(fn(), ref)
                if not err < 1e-2:
                    log(f"  attn splits={splits} bn={bn}: WRONG {err:.3g}")
                    continue
                us = graph_us([partial(fn, c) for c in kvs], reps=max(5, len(kvs)), replays=10)
                res.append((us, splits, bn, ns, nw))
            except Exception as e:  # noqa: BLE001
                log(f"  attn splits={splits} bn={bn} ns={ns}: FAILED {type(e).__name__}: {str(e)[:300]}")
    res.sort(key=lambda r: r[0])
    print(
        f"  attn bs{batch} all:",
        "; ".join(f"{r[0]:.1f} s={r[1]} bn={r[2]} ns={r[3]} nw={r[4]}" for r in res),
        flush=True,
    )
    bw = 4.2e12
    one = min((r for r in res if r[1] == 1), default=None)
    dflt = next((r for r in res if r[1] is None), None)  # the default plan (`paged_attention.key_plan`)
    kern = next((r for r in res if r[1] == "kernel"), None)
    log(f"paged attention decode bs{batch} ctx{ctx} fp16 graph: best {res[0][0]:6.1f} us (splits={res[0][1]} "
        f"bn={res[0][2]} ns={res[0][3]} nw={res[0][4]}) | default {dflt[0] if dflt else float('nan'):6.1f} | "
        f"default, combine kernel {kern[0] if kern else float('nan'):6.1f} | "
        f"no split {one[0] if one else float('nan'):6.1f} | KV floor {floor_bytes / bw * 1e6:5.1f} us")  # fmt: skip


def sweep_decode_attention() -> None:
    """`sweep_attention` at the decode batches, every sequence at context 2048 (`key_plan`'s measurement)."""
    for batch in (1, 2, 4, 8, 16, 32, 64):
        sweep_attention(batch, 2048, ragged=False)


def main() -> int:
    log(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {__import__('triton').__version__}"
    )
    torch.manual_seed(0)
    best: dict[int, tuple[float, dict[str, Any]]] = {}
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    sections: tuple[tuple[str, Callable[[], None]], ...] = (("gptq", lambda: sweep_gptq(best)), ("dequant", time_dequant_pass), ("act-order", sweep_act_order),
                     ("attention", lambda: sweep_attention()), ("attention bs4", lambda: sweep_attention(4, 8192)),
                     ("attention decode", sweep_decode_attention))  # fmt: skip
    failed = run_sections(sections, only, log, LINES, "gpu_sweep.txt")
    print("\n==== sweep table ====\n" + "\n".join(LINES))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
