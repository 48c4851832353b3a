"""The decode-step sections of `benchmarks/gpu.py` ("decode step", "runtime layer").

A GPTQ attention decode step (bs 32, context 2048, Llama-3-8B dims): our kernels in one CUDA
graph vs the dense fp16 layer in plain torch (SDPA) vs torch.compile of it; and the
GPTQAttentionWithRope layer through `fusegraph.compile(..., cuda_graphs=True)`. `gpu.py` passes
its `log`, so the rows land in its table.
"""

# ruff: noqa: B023 - the lambdas are timed inside the loop that defines them
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F  # noqa: N812
from gpu import (
    DEV,
    HIDDEN,
    HKV,
    D,
    H,
    bench_us,
    check,
    freqs_table,
    gptq_call,
    graph_us,
    random_gptq,
    rel_err,
)
from torch import Tensor


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


def bench_decode_step(k: SimpleNamespace, bw: float, log: Callable[[str], None]) -> None:
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


def bench_runtime_layer(bw: float, log: Callable[[str], None]) -> None:
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
