"""GPU benchmark of fusegraph's Triton kernels against plain torch and torch.compile.

One script, one call: `python benchmarks/gpu.py [--only gptq,decode step,...]` on a CUDA machine. It prints the GPU name
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
     GPTQAttentionWithRope layer through `fusegraph.compile(..., cuda_graphs=True)`.
Every row checks its result against a torch reference before it is timed. With $OUT set, the
table is also written to $OUT/gpu_bench.txt.
"""

# ruff: noqa: B023 - the lambdas are timed inside the loop that defines them
from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
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


def graph_us(fns: Sequence[Callable[[], object]], reps: int = 24, replays: int = 15) -> float:
    """Device time per call: fns[i % len(fns)] for i < reps captured in one CUDA graph, median of the
    replays over reps. Host launch overhead is out; rotate over input copies to keep L2 cold."""
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
    times: list[float] = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(float(a.elapsed_time(b)) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


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


def _gptq_module() -> ModuleType:  # the benchmarks/gpu_gptq.py module
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_gptq

    return gpu_gptq


def bench_gptq(k: SimpleNamespace, bw: float) -> None:
    """The four Llama-3-8B shapes at M = 1..1024 and one whole decoder layer (benchmarks/gpu_gptq.py)."""
    _gptq_module().bench_shapes(k, bw, graph_us, log)
    _gptq_module().bench_layer(k, graph_us, log)


# ---- 3. decode step --------------------------------------------------------------------------------------


def dense_step(
    x: Tensor, wqkv: Tensor, wo: Tensor, k_cache: Tensor, v_cache: Tensor, freqs: Tensor, pos: int
) -> Tensor:
    """The same layer with dense fp16 weights in plain torch: every sequence at position `pos`."""
    b = x.shape[0]
    q, kk, v = torch.split(x @ wqkv, [H * D, HKV * D, HKV * D], dim=1)
    cos, sin = freqs[pos, 0::2].half(), freqs[pos, 1::2].half()

    def rope(t: Tensor, n: int) -> Tensor:
        t = t.view(b, n, D)
        t1, t2 = t[..., : D // 2], t[..., D // 2 :]
        return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], -1)

    q, kk = rope(q, H), rope(kk, HKV)
    k_cache[:, :, pos] = kk
    v_cache[:, :, pos] = v.view(b, HKV, D)
    o = F.scaled_dot_product_attention(q.view(b, H, 1, D), k_cache[:, :, : pos + 1], v_cache[:, :, : pos + 1],
                                       enable_gqa=True)  # fmt: skip
    return o.reshape(b, H * D) @ wo


def bench_decode_step(k: SimpleNamespace, bw: float) -> None:
    batch, ctx, page_size = 32, 2048, 128
    pos = ctx - 1
    pages = ctx // page_size
    tq, wq = random_gptq(HIDDEN, (H + 2 * HKV) * D)
    to, wo = random_gptq(H * D, HIDDEN)
    freqs = freqs_table(ctx)
    kctx = torch.randn(batch, HKV, ctx, D, device=DEV, dtype=torch.float16)
    vctx = torch.randn_like(kctx)
    lut = torch.randperm(batch * pages, device=DEV).reshape(batch, pages)
    kv = torch.empty(batch * pages, 2, 1, page_size, HKV, D, device=DEV, dtype=torch.float16)
    for i, c in enumerate((kctx, vctx)):
        kv[lut.flatten(), i, 0] = c.view(batch, HKV, pages, page_size, D).permute(0, 2, 3, 1, 4).reshape(
            batch * pages, page_size, HKV, D)  # fmt: skip
    lens = torch.full((batch,), pos, device=DEV, dtype=torch.int32)
    ro = torch.arange(batch + 1, device=DEV, dtype=torch.int32)
    lut32 = lut.to(torch.int32)
    x = torch.randn(batch, HIDDEN, device=DEV, dtype=torch.float16)

    def ours(x: Tensor) -> Tensor:
        qkv = gptq_call(k, tq, x)
        q = k.rss(qkv, ro, freqs, kv, lens, lut32, layer_idx=0, interleaved=False, n_heads=H, n_kv_heads=HKV,
                  head_dim=D)  # fmt: skip
        a = k.attn(q.view(batch, H, D), ro, kv, lens, lut32, layer_idx=0, scale=D**-0.5)
        return gptq_call(k, to, a.view(batch, H * D))

    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ours(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_static = ours(x)
    graph.replay()
    kc, vc = kctx.clone(), vctx.clone()
    y_dense = dense_step(x, wq, wo, kc, vc, freqs, pos)
    compiled = torch.compile(dense_step)
    y_comp = compiled(x, wq, wo, kctx.clone(), vctx.clone(), freqs, pos)
    check("decode step ours vs dense", rel_err(y_static, y_dense), 2e-2)
    check("decode step compiled vs dense", rel_err(y_comp, y_dense), 2e-2)
    t_ours = bench_us(graph.replay)
    t_eager = bench_us(lambda: dense_step(x, wq, wo, kc, vc, freqs, pos))
    t_comp = bench_us(lambda: compiled(x, wq, wo, kc, vc, freqs, pos))
    w_bytes = sum(
        t["qweight"].numel() * 4 + t["scales"].numel() * 2 + t["qzeros"].numel() * 4 for t in (tq, to)
    )
    floor = (w_bytes + 2 * batch * ctx * HKV * D * 2) / bw * 1e6
    log(f"decode step bs{batch} ctx{ctx}     ours (CUDA graph) {t_ours:7.1f} us | dense eager {t_eager:7.1f} us"
        f" ({t_eager / t_ours:4.2f}x) | dense compile {t_comp:7.1f} us ({t_comp / t_ours:4.2f}x)"
        f" | floor {floor:5.1f} us ({t_ours / floor:4.2f}x floor)")  # fmt: skip
    qkv_in = torch.randn(batch, (H + 2 * HKV) * D, device=DEV, dtype=torch.float16)
    q_in = torch.randn(batch, H, D, device=DEV, dtype=torch.float16)
    parts = {
        "qkv gptq": lambda: gptq_call(k, tq, x),
        "rope_split_store": lambda: k.rss(qkv_in, ro, freqs, kv, lens, lut32, layer_idx=0, interleaved=False,
                                          n_heads=H, n_kv_heads=HKV, head_dim=D),
        "paged attention": lambda: k.attn(q_in, ro, kv, lens, lut32, layer_idx=0, scale=D**-0.5),
        "o_proj gptq": lambda: gptq_call(k, to, x),
    }  # fmt: skip
    log(
        "  parts, do_bench (launch included): "
        + ", ".join(f"{n} {bench_us(f):.1f} us" for n, f in parts.items())
    )
    log(
        "  parts, CUDA graph (device time):   "
        + ", ".join(f"{n} {graph_us([f]):.1f} us" for n, f in parts.items())
    )


def bench_runtime_layer(bw: float) -> None:
    """GPTQAttentionWithRope through fusegraph.compile(eager, cuda, cuda_graphs=True)."""
    import fusegraph
    from fusegraph import DeviceRef, DType, Graph, TensorType
    from fusegraph.nn import (
        GPTQAttentionWithRope,
        KVCacheParams,
        PagedCacheValues,
        QuantizationConfig,
        RotaryEmbedding,
    )
    from fusegraph.nn.checkpoint import quantize_gptq_projections
    from fusegraph.runtime import PagedKVCacheManager

    gpu, batch, ctx = DeviceRef.GPU(), 32, 2048
    kv_params = KVCacheParams(dtype=DType.float16, n_kv_heads=HKV, head_dim=D, num_layers=1, page_size=128,
                              devices=[gpu])  # fmt: skip
    rope = RotaryEmbedding(
        dim=HIDDEN, n_heads=H, theta=500000.0, max_seq_len=ctx, interleaved=False, device=gpu
    )
    cfg = QuantizationConfig(bits=4, group_size=128, desc_act=False, sym=False)
    attn = GPTQAttentionWithRope(quantization_config=cfg, rope=rope, num_attention_heads=H, num_key_value_heads=HKV,
                                 hidden_size=HIDDEN, kv_params=kv_params, dtype=DType.float16, devices=[gpu])  # fmt: skip
    dense = {p: torch.randn(n, HIDDEN) * 0.02 for p, n in (("q_proj", H * D), ("k_proj", HKV * D),
                                                          ("v_proj", HKV * D), ("o_proj", HIDDEN))}  # fmt: skip
    attn.load_state_dict(quantize_gptq_projections(dense, cfg))
    manager = PagedKVCacheManager(kv_params, num_blocks=batch * ctx // 128, devices=[gpu])
    with Graph("attn", input_types=[TensorType(DType.float16, ["total_seq_len", HIDDEN], gpu),
                                     TensorType(DType.uint32, ["batch_plus_1"], gpu), *manager.input_types()]) as g:  # fmt: skip
        x, ro, *kv_inputs = g.inputs
        g.output(attn(0, x, PagedCacheValues(*kv_inputs), rope.freqs_cis, ro))
    weights = {n: t.to(DEV) for n, t in attn.state_dict().items()}
    model = fusegraph.compile(g, backend="eager", device="cuda", weights=weights, cuda_graphs=True)
    seqs = [manager.claim(max_len=ctx) for _ in range(batch)]
    manager.prepare(seqs, [ctx - 1] * batch)  # pages are allocated in prepare; commit needs it
    manager.commit(seqs, [ctx - 1] * batch)
    step = manager.prepare(seqs, [1] * batch)
    xin = torch.randn(batch, HIDDEN, device=DEV, dtype=torch.float16)
    eager = fusegraph.compile(g, backend="eager", device="cuda", weights=weights)
    y0 = eager(xin, step.row_offsets, *step.kv_inputs)[0]
    model(xin, step.row_offsets, *step.kv_inputs)  # capture
    y1 = model(xin, step.row_offsets, *step.kv_inputs)[0]
    check("runtime layer graph vs eager", rel_err(y1, y0), 1e-3)
    t_graph = bench_us(lambda: model(xin, step.row_offsets, *step.kv_inputs))
    t_eager = bench_us(lambda: eager(xin, step.row_offsets, *step.kv_inputs))
    log(
        f"GPTQAttentionWithRope runtime  cuda_graphs {t_graph:7.1f} us | eager runtime (Triton ops) {t_eager:7.1f} us"
    )


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


def main() -> int:
    name = torch.cuda.get_device_name()
    log(f"GPU: {name} | torch {torch.__version__} | triton {__import__('triton').__version__}")
    k = load_kernels()
    bw = copy_bandwidth()
    log(f"device-to-device copy: {bw / 1e12:.2f} TB/s (bytes read + written)")
    torch.manual_seed(0)
    sections = [
        ("registered ops", check_registered_ops),
        ("gptq compile", lambda: _gptq_module().check_gptq_compile(check, rel_err, log)),
        ("rss decode", lambda: bench_rope_split_store(k, "decode bs64x1", 64, 1, 2000, bw)),
        ("rss prefill", lambda: bench_rope_split_store(k, "prefill 4x2048", 4, 2048, 0, bw)),
        ("gptq", lambda: bench_gptq(k, bw)),
        ("decode step", lambda: bench_decode_step(k, bw)),
        ("runtime layer", lambda: bench_runtime_layer(bw)),
    ]
    failed = 0
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    for label, fn in sections:
        if only and label not in only:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001 - one broken section must not hide the others
            failed += 1
            log(f"[{label}] FAILED:\n{traceback.format_exc()}")
    if out := os.environ.get("OUT"):
        Path(out, "gpu_bench.txt").write_text("\n".join(ROWS) + "\n")
    print("\n==== table ====\n" + "\n".join(r for r in ROWS if "Traceback" not in r))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
