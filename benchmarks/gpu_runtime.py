"""The eager runtime against our kernels wired by hand: one GPTQAttentionWithRope decode step.

`python benchmarks/gpu_runtime.py` on a CUDA machine (`--tiny` runs the same code on the CPU
at toy sizes, without the hand-wired rows, as a dry run). Llama-3-8B dims (4096 hidden, 32
heads, 8 kv heads, head dim 128), 4-bit GPTQ g128, fp16, batch 32, every sequence at
context 2048, pages of 128. For a stack of 1 and 8 layers in one graph (distinct weights per
layer, one cache):
- hand-wired: per layer the tiled GPTQ GEMV (qkv, repacked once), the fused rope-split-store
  and paged attention, then the o_proj GEMV, all in one CUDA graph, replayed;
- `fusegraph.compile(g, device="cuda", cuda_graphs=True)` (the default pipeline: fuse-qkv,
  fuse-rope-split-store, canonicalize, cse, gptq-repack, dce) called as `model(*inputs)`;
- the same through the zero-copy step API, `step = model.bind(*inputs); step()`;
- the eager runtime, `cuda_graphs=False` (Triton ops, one Python call per op).
Times are `triton.testing.do_bench` medians (L2 flushed before each repetition) of one call,
so host overhead counts when the GPU would wait for it. Every runtime row is checked against
the hand-wired output first. A 32-layer step then runs under
`torch.cuda.set_sync_debug_mode("error")`: no host sync between the inputs and the outputs.
`--only "1 layer,8 layers,32 layers no sync"` picks sections.
With $OUT set, the log is also written to $OUT/gpu_runtime.txt.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fusegraph  # noqa: E402
from fusegraph import DeviceRef, DType, Graph, TensorType  # noqa: E402
from fusegraph.nn import (  # noqa: E402
    GPTQAttentionWithRope,
    KVCacheParams,
    LayerList,
    Module,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
)
from fusegraph.runtime import PagedKVCacheManager  # noqa: E402

TINY = "--tiny" in sys.argv
DEV = "cpu" if TINY else "cuda"
H, HKV, D = (4, 2, 16) if TINY else (32, 8, 128)
HIDDEN = H * D
BATCH, CTX, PAGE = (2, 64, 16) if TINY else (32, 2048, 128)
GROUP = 32 if TINY else 128
LOG: list[str] = []


def log(line: str = "") -> None:
    print(line, flush=True)
    LOG.append(line)


def bench_us(fn) -> float:
    if TINY:
        start = time.perf_counter()
        for _ in range(3):
            fn()
        return (time.perf_counter() - start) / 3 * 1e6
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=150, return_mode="median") * 1e3


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


class _Block(Module):
    def __init__(self, attn: GPTQAttentionWithRope) -> None:
        super().__init__()
        self.self_attn = attn


class _Stack(Module):
    def __init__(self, blocks: list[_Block]) -> None:
        super().__init__()
        self.layers = LayerList(blocks)


def build(n_layers: int) -> SimpleSetup:
    """The graph of `n_layers` attention layers, random GPTQ weights on the device, and one
    decode step's inputs (every sequence at position CTX - 1)."""
    dev = DeviceRef.CPU() if TINY else DeviceRef.GPU()
    dtype = DType.float32 if TINY else DType.float16
    kv_params = KVCacheParams(dtype=dtype, n_kv_heads=HKV, head_dim=D, num_layers=n_layers, page_size=PAGE,
                              devices=[dev])  # fmt: skip
    rope = RotaryEmbedding(
        dim=HIDDEN, n_heads=H, theta=500000.0, max_seq_len=CTX, interleaved=False, device=dev
    )
    quant = QuantizationConfig(bits=4, group_size=GROUP, desc_act=False, sym=False)
    layers = [
        _Block(
            GPTQAttentionWithRope(
                quantization_config=quant,
                rope=rope,
                num_attention_heads=H,
                num_key_value_heads=HKV,
                hidden_size=HIDDEN,
                kv_params=kv_params,
                dtype=dtype,
                devices=[dev],
            )
        )  # fmt: skip
        for _ in range(n_layers)
    ]
    _Stack(layers)  # names the weights layers.<i>.self_attn.*
    manager = PagedKVCacheManager(kv_params, num_blocks=BATCH * CTX // PAGE, devices=[dev])
    types = [
        TensorType(dtype, ["total_seq_len", HIDDEN], dev),
        TensorType(DType.uint32, ["batch_plus_1"], dev),
    ]
    with Graph(f"attn_{n_layers}l", input_types=[*types, *manager.input_types()]) as g:
        x, ro, *kv_inputs = g.inputs
        cache = PagedCacheValues(*kv_inputs)
        for i, block in enumerate(layers):  # the same modules as stack.layers (which names them)
            x = block.self_attn(i, x, cache, rope.freqs_cis, ro)
        g.output(x)
    weights = random_weights(g, rope)
    seqs = [manager.claim(max_len=CTX) for _ in range(BATCH)]
    manager.prepare(seqs, [CTX - 1] * BATCH)
    manager.commit(seqs, [CTX - 1] * BATCH)
    manager.kv_blocks.normal_()  # a full, random context
    step = manager.prepare(seqs, [1] * BATCH)
    xin = torch.randn(BATCH, HIDDEN, device=DEV, dtype=dtype.to_torch())
    inputs = [xin, step.row_offsets, *step.kv_inputs]
    return SimpleSetup(g, weights, inputs, n_layers)


class SimpleSetup:
    def __init__(
        self, graph: Graph, weights: dict[str, torch.Tensor], inputs: list[torch.Tensor], n: int
    ) -> None:
        self.graph, self.weights, self.inputs, self.n_layers = graph, weights, inputs, n


def random_weights(g: Graph, rope: RotaryEmbedding) -> dict[str, torch.Tensor]:
    """Random packed GPTQ tensors made on the device (quantizing 8B-sized layers on the host
    takes minutes); the rope table from the module."""
    gen = torch.Generator(device=DEV).manual_seed(0)
    weights = {}
    for name, t in g.weights.items():
        shape = [int(d) for d in t.shape]
        dt = t.dtype.to_torch()
        if name in (table := rope.state_dict()):
            weights[name] = table[name].to(DEV)
        elif name.endswith("scales"):
            weights[name] = (torch.rand(shape, generator=gen, device=DEV) * 0.002 + 0.0005).to(dt)
        elif name.endswith(("qweight", "qzeros")):
            weights[name] = torch.randint(
                -(2**31), 2**31 - 1, shape, generator=gen, device=DEV, dtype=torch.int32
            )
        elif name.endswith("g_idx"):
            weights[name] = (torch.arange(shape[0], device=DEV) // GROUP).to(dt)
        else:
            weights[name] = (torch.randn(shape, generator=gen, device=DEV) * 0.02).to(dt)
    return weights


def hand_wired(setup: SimpleSetup) -> tuple[Any, torch.Tensor]:
    """Our kernels called directly, every layer in one CUDA graph: (replay, static output)."""
    import fusegraph.runtime.kernels as k
    from fusegraph.ops.gptq_layout import repack
    from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul

    w = setup.weights
    x, ro, kv, lens, lut = setup.inputs
    freqs = next(t for n, t in w.items() if n.endswith("freqs_cis"))
    layers = []
    for i in range(setup.n_layers):
        p = f"layers.{i}.self_attn."
        qkv = {
            s: torch.cat([w[f"{p}{m}_proj.{s}"] for m in "qkv"], dim=1)
            for s in ("qweight", "qzeros", "scales")
        }
        o = {s: w[f"{p}o_proj.{s}"] for s in ("qweight", "qzeros", "scales")}
        tiled = []
        for t in (qkv, o):
            r = repack(t["qweight"], t["qzeros"], None, bits=4, group_size=GROUP, sym=False, desc_act=False)
            tiled.append((r["qweight"], t["scales"], r["qzeros"]))
        layers.append(tiled)

    def step() -> torch.Tensor:
        h = x
        for i, (tq, to) in enumerate(layers):
            qkv_out = gptq_tiled_matmul(h, *tq, bits=4, group_size=GROUP)
            q = k.rope_split_store_triton(qkv_out, ro, freqs, kv, lens, lut, layer_idx=i, interleaved=False,
                                          n_heads=H, n_kv_heads=HKV, head_dim=D)  # fmt: skip
            a = k.paged_attention_triton(q.view(-1, H, D), ro, kv, lens, lut, layer_idx=i, scale=D**-0.5)
            h = gptq_tiled_matmul(a.reshape(-1, H * D), *to, bits=4, group_size=GROUP)
        return h

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    return graph.replay, out


def bench_stack(n_layers: int) -> None:
    setup = build(n_layers)
    model = fusegraph.compile(setup.graph, device=DEV, weights=setup.weights, cuda_graphs=not TINY)
    eager = fusegraph.compile(setup.graph, device=DEV, weights=setup.weights)
    log(f"{n_layers} layer(s): pipeline {model.pipeline}")
    ops = sorted({op.name for op in model.graph.block.ops} - {"func.return", "fg.weight"})
    log(f"  ops that run: {', '.join(ops)}")
    y_eager = eager(*setup.inputs)[0].clone()
    y_model = model(*setup.inputs)[0].clone()
    step = model.bind(*setup.inputs)
    y_step = step()[0].clone()
    rows: dict[str, float] = {}
    if not TINY:
        replay, y_hand = hand_wired(setup)
        torch.cuda.synchronize()
        for name, y in (("eager", y_eager), ("cuda_graphs", y_model), ("bound step", y_step)):
            err = rel_err(y, y_hand)
            if not err < 1e-2:
                raise AssertionError(f"{n_layers} layers: {name} vs hand-wired: relative error {err:.3g}")
        rows["hand-wired kernels, one CUDA graph"] = bench_us(replay)
    rows["compile(cuda_graphs=True), model(*inputs)"] = bench_us(lambda: model(*setup.inputs))
    rows["compile(cuda_graphs=True), step = model.bind(...)"] = bench_us(step)
    rows["compile() eager runtime (no CUDA graph)"] = bench_us(lambda: eager(*setup.inputs))
    base = rows.get("hand-wired kernels, one CUDA graph")
    for name, us in rows.items():
        ratio = f"  {us / base:5.2f}x hand-wired" if base else ""
        log(f"  {name:52s} {us:9.1f} us{ratio}")
    if n_layers == 1:
        log(str(model.profile(*setup.inputs, steps=20)))
        log(str(eager.profile(*setup.inputs, steps=20)))


def no_sync_32_layers() -> None:
    n = 4 if TINY else 32
    setup = build(n)
    model = fusegraph.compile(setup.graph, device=DEV, weights=setup.weights, cuda_graphs=not TINY)
    step = model.bind(*setup.inputs)
    model(*setup.inputs)
    model(*setup.inputs)
    step()
    step()
    if not TINY:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            model(*setup.inputs)
            step()
    finally:
        if not TINY:
            torch.cuda.set_sync_debug_mode("default")
    model.synchronize()
    t_call = bench_us(lambda: model(*setup.inputs))
    t_step = bench_us(step)
    log(f"{n} layers in one graph: no host sync in model(*inputs) or step() under set_sync_debug_mode('error'); "
        f"model(*inputs) {t_call:.1f} us, bound step {t_step:.1f} us per decode step")  # fmt: skip


def main() -> int:
    if not TINY:
        import triton

        log(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    log(
        f"GPTQAttentionWithRope decode: batch {BATCH}, context {CTX}, hidden {HIDDEN}, heads {H}/{HKV}, 4-bit g{GROUP}"
    )
    failed = 0
    sections = (("1 layer", lambda: bench_stack(1)), ("8 layers", lambda: bench_stack(8)),
                ("32 layers no sync", no_sync_32_layers))  # fmt: skip
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    for label, fn in sections:
        if only and label not in only:
            continue
        try:
            fn()
            if not TINY:
                torch.cuda.empty_cache()  # the section's caches and weights are gone
        except Exception:  # noqa: BLE001 - one broken section must not hide the others
            failed += 1
            log(f"[{label}] FAILED:\n{traceback.format_exc()}")
    if out := os.environ.get("OUT"):
        Path(out, "gpu_runtime.txt").write_text("\n".join(LOG) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
