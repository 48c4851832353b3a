"""GPU benchmark of fusegraph's Triton kernels against plain torch and torch.compile.

One script, one call: `python benchmarks/gpu.py [--only gptq,decode step,iree,...] [--iree-dir DIR]` on a CUDA machine. It prints the GPU name
and a table of medians (`triton.testing.do_bench`, return_mode="median", L2 flushed by
do_bench before every repetition), with ratios measured side by side in this run:
  0. the registered CUDA kernels of the torch.library ops vs the ops' CPU implementations;
  1. fused rope-split-store vs the unfused eager sequence vs torch.compile of it (decode and
     prefill), with the fraction of HBM bandwidth for prefill (vs a copy measured here);
  2. GPTQ matmul on the repacked layout, the four Llama-3-8B shapes at M = 1..1024: 4-bit g128 plain
     and act-order, 8-bit (and the PDL-chained launch at M <= 2), vs cuBLAS fp16 and torch's tinygemm int4, as CUDA-graph
     replays (device time, L2 cold), with the share of copy bandwidth; one whole decoder layer
     (benchmarks/gpu_gptq.py);
  3. a GPTQ attention decode step (bs 32, context 2048, Llama-3-8B dims): our kernels in a
     CUDA graph vs the dense fp16 layer in plain torch (SDPA) vs torch.compile of it; and the
     GPTQAttentionWithRope layer through `fusegraph.compile(..., cuda_graphs=True)`
     (benchmarks/gpu_decode.py);
  4. the same layer's decode step compiled by IREE for CUDA (custom dispatches, cache in place)
     vs eager Triton vs Triton + CUDA graphs, with host<->device bytes per step
     (benchmarks/gpu_iree.py). The GPU box has no IREE compiler: compile the module first
     (`.venv/bin/python benchmarks/gpu_iree.py compile --out build/iree_bench`), carry
     `build/iree_bench` and pass `--iree-dir build/iree_bench`; without it the section says so.
Every row checks its result against a torch reference before it is timed. With $OUT set, the
table is also written to $OUT/gpu_bench.txt.
"""

# ruff: noqa: B023 - the lambdas are timed inside the loop that defines them
from __future__ import annotations

import importlib
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import torch
from torch import Tensor
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[1]
DEV = "cuda"
ROWS: list[str] = []
H, HKV, D, HIDDEN = 32, 8, 128, 4096


def log(line: str = "") -> None:
    print(line, flush=True)
    ROWS.append(line)


def bench_us(fn: Callable[[], object]) -> float:
    return float(do_bench(fn, warmup=25, rep=200, return_mode="median")) * 1e3


def graph_us(
    fns: Sequence[Callable[[], object]], reps: int = 24, replays: int = 15, warm_ms: float = 30.0
) -> float:
    """Device time per call: fns[i % len(fns)] for i < reps captured in one CUDA graph, median of the
    replays over reps. Host launch overhead is out; rotate over input copies to keep L2 cold. The graph
    is replayed for at least `warm_ms` first, so that a cell is not timed while the clocks still move
    after the one before it (the fifth session's A/B call: a variant timed again at the end of its row
    ran up to 10% faster without this)."""
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(reps):
            fns[i % len(fns)]()
    graph.replay()
    warm_end = time.perf_counter() + warm_ms / 1e3
    while True:  # at least one more replay, then until warm_ms have passed on the host clock
        graph.replay()
        torch.cuda.synchronize()
        if time.perf_counter() >= warm_end:
            break
    times: list[float] = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(float(a.elapsed_time(b)) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def run_sections(sections: Sequence[tuple[str, Callable[[], object]]], only: Sequence[str] | None,
                 log: Callable[[str], None], lines: Sequence[str], out_name: str) -> int:  # fmt: skip
    """Run each (name, fn) of `sections` that `only` (None: all) names, logging a failing one's traceback
    instead of stopping; then write `lines` to $OUT/`out_name` where OUT is set. Returns how many failed."""
    failed = 0
    for name, fn in sections:
        if only and name not in only:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001 - one failing section must not hide the others
            failed += 1
            log(f"[{name}] FAILED:\n{traceback.format_exc()}")
    if out := os.environ.get("OUT"):
        Path(out, out_name).write_text("\n".join(lines) + "\n")
    return failed


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(((a - b).norm() / b.norm().clamp_min(1e-30)).item())


def check(name: str, err: float, tol: float) -> None:
    if not err < tol:  # NaN fails too
        raise AssertionError(f"{name}: relative error {err:.3g} >= {tol}")


def load_kernels() -> SimpleNamespace:
    """The kernel functions, through fusegraph (which also registers them as the ops' CUDA impls).

    fusegraph needs xdsl on the GPU box: carry its wheel (docs/benchmarks.md says how it was run).
    """
    sys.path.insert(0, str(ROOT))
    import fusegraph.runtime.kernels as k
    from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul

    return SimpleNamespace(
        rss=k.rope_split_store_triton,
        gptq=k.gptq_matmul_triton,
        attn=k.paged_attention_triton,
        tiled=gptq_tiled_matmul,
    )


def freqs_table(max_pos: int, theta: float = 500000.0) -> torch.Tensor:
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64, device=DEV) / D)
    ang = torch.arange(max_pos, dtype=torch.float64, device=DEV)[:, None] * inv[None]
    return torch.stack([ang.cos(), ang.sin()], -1).reshape(max_pos, D).float()


def copy_bandwidth() -> float:
    src = torch.randn(256 * 2**20, device=DEV)  # 1 GiB
    dst = torch.empty_like(src)
    us = bench_us(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (us * 1e-6)


# ---- 1. rope-split-store ---------------------------------------------------------------------------------


def unfused_rope_split_store(
    qkv: Tensor, ro: Tensor, freqs: Tensor, kv: Tensor, lens: Tensor, lut: Tensor
) -> Tensor:
    """split, rope(q), rope(k), store(k), store(v) in plain torch (NeoX layout)."""
    t_rows = qkv.shape[0]
    q, k, v = torch.split(qkv, [H * D, HKV * D, HKV * D], dim=1)
    t = torch.arange(t_rows, device=qkv.device)
    # token -> sequence as a compare-and-count (searchsorted tripped an index assert in inductor, torch 2.11)
    b = (t[:, None] >= ro[1:][None, :]).sum(-1)
    pos = lens[b] + t - ro[b]
    cos, sin = freqs[pos, 0::2][:, None], freqs[pos, 1::2][:, None]

    def rope(x: Tensor, n: int) -> Tensor:
        x = x.reshape(t_rows, n, D).float()
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(qkv.dtype)

    qr, kr = rope(q, H), rope(k, HKV)
    page_size = kv.shape[3]
    blk, slot = lut[b, pos // page_size], pos % page_size
    kv[blk, 0, 0, slot] = kr
    kv[blk, 1, 0, slot] = v.reshape(t_rows, HKV, D)
    return qr.reshape(t_rows, H * D)


def bench_rope_split_store(
    k: SimpleNamespace, label: str, batch: int, tokens: int, max_cache: int, bw: float
) -> None:
    page_size = 128
    lens = torch.randint(0, max_cache + 1, (batch,), device=DEV)
    pages = math.ceil((int(lens.max()) + tokens) / page_size)
    lut = torch.randperm(batch * pages, device=DEV).reshape(batch, pages)
    ro = torch.arange(batch + 1, device=DEV) * tokens
    t_rows = batch * tokens
    qkv = torch.randn(t_rows, (H + 2 * HKV) * D, device=DEV, dtype=torch.bfloat16)
    freqs = freqs_table(pages * page_size)
    kv0 = torch.randn(batch * pages, 2, 1, page_size, HKV, D, device=DEV, dtype=torch.bfloat16)
    kv_ref, kv_fused, kv_comp = kv0.clone(), kv0.clone(), kv0.clone()
    compiled = torch.compile(unfused_rope_split_store)
    q_ref = unfused_rope_split_store(qkv, ro, freqs, kv_ref, lens, lut)
    q_fused = k.rss(qkv, ro, freqs, kv_fused, lens, lut, layer_idx=0, interleaved=False, n_heads=H,
                    n_kv_heads=HKV, head_dim=D)  # fmt: skip
    q_comp = compiled(qkv, ro, freqs, kv_comp, lens, lut)
    check(f"rss {label} q", rel_err(q_fused, q_ref), 1e-2)
    check(f"rss {label} kv", rel_err(kv_fused, kv_ref), 1e-2)
    assert torch.equal(kv_fused == kv0, kv_ref == kv0), "fused kernel touched other cache slots"
    check(f"rss {label} compiled q", rel_err(q_comp, q_ref), 1e-2)
    t_fused = bench_us(lambda: k.rss(qkv, ro, freqs, kv_fused, lens, lut, layer_idx=0, interleaved=False,
                                     n_heads=H, n_kv_heads=HKV, head_dim=D))  # fmt: skip
    t_eager = bench_us(lambda: unfused_rope_split_store(qkv, ro, freqs, kv_ref, lens, lut))
    t_comp = bench_us(lambda: compiled(qkv, ro, freqs, kv_comp, lens, lut))
    moved = t_rows * ((H + 2 * HKV) * D + H * D + 2 * HKV * D) * 2
    log(f"rope_split_store {label:<22} fused {t_fused:8.1f} us | eager {t_eager:8.1f} us ({t_eager / t_fused:5.1f}x)"
        f" | compile {t_comp:8.1f} us ({t_comp / t_fused:5.1f}x) | floor {moved / bw * 1e6:6.1f} us,"
        f" HBM {moved / (t_fused * 1e-6) / bw:5.1%}")  # fmt: skip


# ---- 2. GPTQ matmul --------------------------------------------------------------------------------------


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    per = 32 // bits
    v = values.to(torch.int64).reshape(values.shape[0] // per, per, -1)
    word = cast(torch.Tensor, sum((v[:, i] & ((1 << bits) - 1)) << (i * bits) for i in range(per)))
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def random_gptq(
    k_in: int, n_out: int, *, bits: int = 4, group: int = 128, act_order: bool = False
) -> tuple[dict[str, Tensor], Tensor]:
    """Random GPTQ tensors (v1 zeros) and their dense fp16 weight [K, N]."""
    groups = k_in // group
    q = torch.randint(0, 2**bits, (k_in, n_out), device=DEV)
    z = torch.randint(1, 2**bits, (groups, n_out), device=DEV)
    scales = (torch.rand(groups, n_out, device=DEV) * 0.004 + 0.001).half()
    g_idx = torch.arange(k_in, device=DEV) // group
    if act_order:
        g_idx = g_idx[torch.randperm(k_in, device=DEV)]
    w = ((q - z[g_idx]).float() * scales[g_idx].float()).half()
    t = {"qweight": pack_rows(q, bits), "qzeros": pack_rows((z - 1).t().contiguous(), bits).t().contiguous(),
         "scales": scales, "g_idx": g_idx.to(torch.int32)}  # fmt: skip
    return t, w


def gptq_call(k: SimpleNamespace, t: dict[str, Tensor], x: Tensor, desc_act: bool = False,
              config: dict[str, Any] | None = None, act_order: str = "permute") -> Tensor:  # fmt: skip
    """desc_act=True passes g_idx: the kernel sorts the weight rows by group once (cached), or with
    act_order="gather" indexes the scales through g_idx per row."""
    y: Tensor = k.gptq(x, t["qweight"], t["scales"], t["qzeros"], t["g_idx"] if desc_act else None, bits=4,
                       group_size=128, zero_format="v1", desc_act=desc_act, config=config, act_order=act_order)  # fmt: skip
    return y


def _module(name: str) -> ModuleType:
    """A sibling benchmark module (gpu_gptq.py, gpu_decode.py); they take `log` from here, so their
    rows land in this run's table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name)


def bench_gptq(k: SimpleNamespace, bw: float) -> None:
    """The four Llama-3-8B shapes at M = 1..1024 and one whole decoder layer (benchmarks/gpu_gptq.py)."""
    _module("gpu_gptq").bench_shapes(k, bw, graph_us, log)
    _module("gpu_gptq").bench_layer(k, graph_us, log)


# ---- 0. registered ops on CUDA vs their CPU implementations ---------------------------------------------


def check_registered_ops() -> None:
    torch.manual_seed(0)
    h, hkv, d, ps = 4, 2, 64, 16
    ro = torch.tensor([0, 3, 4, 9], dtype=torch.int32)
    lens = torch.tensor([5, 0, 17], dtype=torch.int32)
    lut = torch.randperm(12).reshape(3, 4).to(torch.int32)
    qkv = torch.randn(9, (h + 2 * hkv) * d, dtype=torch.float16)
    freqs = torch.randn(64, d)
    kv = torch.randn(12, 2, 2, ps, hkv, d, dtype=torch.float16)

    def args(dev: str, kvb: Tensor) -> tuple[Any, ...]:
        return (qkv.to(dev), ro.to(dev), freqs.to(dev), kvb, lens.to(dev), lut.to(dev), 1)

    kv_cpu, kv_gpu = kv.clone(), kv.to(DEV)
    for interleaved in (False, True):
        q_cpu = torch.ops.fusegraph.rope_split_store_(*args("cpu", kv_cpu), interleaved, h, hkv, d)
        q_gpu = torch.ops.fusegraph.rope_split_store_(*args(DEV, kv_gpu), interleaved, h, hkv, d)
        check("op rope_split_store_ q", rel_err(q_gpu.cpu(), q_cpu), 2e-3)
        check("op rope_split_store_ kv", rel_err(kv_gpu.cpu(), kv_cpu), 2e-3)
    q = torch.randn(9, h, d, dtype=torch.float16)
    a_cpu = torch.ops.fusegraph.paged_attention(q, ro, kv_cpu, lens, lut, 1, d**-0.5, None)
    a_gpu = torch.ops.fusegraph.paged_attention(q.to(DEV), ro.to(DEV), kv_gpu, lens.to(DEV), lut.to(DEV), 1,
                                                d**-0.5, None)  # fmt: skip
    check("op paged_attention", rel_err(a_gpu.cpu(), a_cpu), 2e-3)
    for bits, act in ((4, False), (8, True), (4, True)):
        t, _ = random_gptq(256, 96, bits=bits, group=64, act_order=act)
        x = torch.randn(5, 256, dtype=torch.float16, device=DEV)

        def call(dev: str) -> Tensor:
            y: Tensor = torch.ops.fusegraph.qmatmul_gptq(
                x.to(dev), t["qweight"].to(dev), t["scales"].to(dev), t["qzeros"].to(dev), t["g_idx"].to(dev),
                bits, 64, False, "v1", None)  # fmt: skip
            return y

        check(f"op qmatmul_gptq {bits}b act={act}", rel_err(call(DEV).cpu(), call("cpu")), 2e-3)
    from fusegraph.ops.gptq_layout import repack

    for bits, act, m in ((4, True, 1), (8, False, 1), (4, False, 9), (8, True, 300)):
        t, _ = random_gptq(256, 128, bits=bits, group=128, act_order=act)
        r = repack(t["qweight"], t["qzeros"], t["g_idx"] if act else None, bits=bits, group_size=128, sym=False,
                   desc_act=act)  # fmt: skip
        x = torch.randn(m, 256, dtype=torch.float16, device=DEV)

        def call(dev: str) -> Tensor:
            y: Tensor = torch.ops.fusegraph.qmatmul_gptq_tiled(
                x.to(dev), r["qweight"].to(dev), t["scales"].to(dev), r["qzeros"].to(dev),
                None if "perm" not in r else r["perm"].to(dev), bits, 128, "v1")  # fmt: skip
            return y

        check(f"op qmatmul_gptq_tiled {bits}b act={act} M={m}", rel_err(call(DEV).cpu(), call("cpu")), 2e-3)
    log("registered CUDA kernels match the ops' CPU implementations (rope_split_store_, paged_attention, "
        "qmatmul_gptq 4/8-bit, qmatmul_gptq_tiled gemv/mma/dequant)")  # fmt: skip


def bench_iree() -> None:
    """Section 4: `gpu_iree.py run` on the module compiled beforehand into `--iree-dir`."""
    folder = Path(_flag("--iree-dir") or "build/iree_bench")
    if not (folder / "manifest.json").exists():
        log(f"[iree] skipped: no compiled module in {folder}; compile it where iree-base-compiler is "
            f"installed (.venv/bin/python benchmarks/gpu_iree.py compile --out {folder}) and carry it")  # fmt: skip
        return
    if _module("gpu_iree").main(["run", "--dir", str(folder)]) != 0:
        raise RuntimeError("gpu_iree: the IREE module disagreed with eager Triton (see above)")
    log(
        f"[iree] {folder}: rows above (per step: time, host<->device bytes; ratios to eager Triton and graphs)"
    )


def _flag(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv[:-1] else None


def main() -> int:
    name = torch.cuda.get_device_name()
    log(f"GPU: {name} | torch {torch.__version__} | triton {__import__('triton').__version__}")
    k = load_kernels()
    bw = copy_bandwidth()
    log(f"device-to-device copy: {bw / 1e12:.2f} TB/s (bytes read + written)")
    torch.manual_seed(0)
    sections = [
        ("registered ops", check_registered_ops),
        ("gptq compile", lambda: _module("gpu_gptq").check_gptq_compile(check, rel_err, log)),
        ("rss decode", lambda: bench_rope_split_store(k, "decode bs64x1", 64, 1, 2000, bw)),
        ("rss prefill", lambda: bench_rope_split_store(k, "prefill 4x2048", 4, 2048, 0, bw)),
        ("gptq", lambda: bench_gptq(k, bw)),
        ("decode step", lambda: _module("gpu_decode").bench_decode_step(k, bw, log)),
        ("runtime layer", lambda: _module("gpu_decode").bench_runtime_layer(bw, log)),
        ("iree", bench_iree),
    ]
    only = (_flag("--only") or "").split(",") if _flag("--only") else None
    failed = run_sections(sections, only, log, ROWS, "gpu_bench.txt")
    print("\n==== table ====\n" + "\n".join(r for r in ROWS if "Traceback" not in r))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
