"""The steps of `fusegraph demo`. Each step prints one short section."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.demo.show import Printer
from fusegraph.nn import (
    GPTQAttentionWithRope,
    KVCacheParams,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
    quantize_gptq_projections,
)
from fusegraph.runtime import PagedKVCacheManager

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 128, 8, 2, 16
STEPS = ([5, 17, 1], [1, 1, 1], [1, 1, 1])  # a ragged prefill, then two decode steps
QUANT = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)


@dataclass
class Layer:
    """The layer under test and what it needs to run."""

    attn: GPTQAttentionWithRope
    rope: RotaryEmbedding
    kv_params: KVCacheParams
    weights: dict[str, torch.Tensor]
    dense: dict[str, torch.Tensor]


def make_layer(device: DeviceRef, fuse: bool, seed: int = 0) -> Layer:
    """A GQA GPTQ attention layer whose weights come from `quantize_gptq`."""
    gen = torch.Generator().manual_seed(seed)
    dense = {
        name: torch.randn(rows, HIDDEN, generator=gen) / HIDDEN**0.5
        for name, rows in (
            ("q_proj", HEADS * HEAD_DIM),
            ("k_proj", KV_HEADS * HEAD_DIM),
            ("v_proj", KV_HEADS * HEAD_DIM),
        )
    }
    dense["o_proj"] = torch.randn(HIDDEN, HEADS * HEAD_DIM, generator=gen) / HIDDEN**0.5
    kv_params = KVCacheParams(
        dtype=DType.float32,
        n_kv_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        num_layers=1,
        page_size=16,
        devices=[device],
    )
    rope = RotaryEmbedding(
        dim=HIDDEN, n_heads=HEADS, theta=10000.0, max_seq_len=256, interleaved=False, device=device
    )
    attn = GPTQAttentionWithRope(
        quantization_config=QUANT,
        rope=rope,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        hidden_size=HIDDEN,
        kv_params=kv_params,
        devices=[device],
        _fuse_rope_and_store=fuse,
    )
    attn.load_state_dict(quantize_gptq_projections(dense, QUANT))
    return Layer(attn, rope, kv_params, attn.state_dict(), dense)


def build_graph(layer: Layer, device: DeviceRef, name: str) -> Graph:
    """The end-to-end contract's graph: x, row offsets and the paged-cache inputs."""
    manager = PagedKVCacheManager(layer.kv_params, num_blocks=16)
    inputs = [
        TensorType(DType.float32, ["total_seq_len", HIDDEN], device),
        TensorType(DType.uint32, ["batch_plus_1"], device),
    ]
    with Graph(name, input_types=[*inputs, *manager.input_types()]) as g:
        x, row_offsets, *kv_inputs = g.inputs
        g.output(layer.attn(0, x, PagedCacheValues(*kv_inputs), layer.rope.freqs_cis, row_offsets))
    return g


def step_inputs(seed: int = 1) -> list[torch.Tensor]:
    """The activations of each step (the same for every backend)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(sum(tokens), HIDDEN, generator=gen) for tokens in STEPS]


def run_steps(
    model: Callable[..., Sequence[torch.Tensor]], layer: Layer, xs: list[torch.Tensor], device: str
) -> tuple[list[torch.Tensor], torch.Tensor, float]:
    """Prefill + decode through `model`; returns outputs, the final K/V of every sequence, seconds."""
    manager = PagedKVCacheManager(layer.kv_params, num_blocks=16)
    seqs = [manager.claim(max_len=64) for _ in STEPS[0]]
    outputs = []
    start = time.perf_counter()
    for tokens, x in zip(STEPS, xs, strict=True):
        batch = manager.prepare(seqs, tokens)
        (y,) = model(x.to(device), batch.row_offsets, *batch.kv_inputs)
        outputs.append(y.cpu())
        manager.commit(seqs, tokens)
    seconds = time.perf_counter() - start
    cache = torch.cat([torch.cat(manager.gather(s, layer_idx=0)).cpu() for s in seqs])
    return outputs, cache, seconds


def reference_outputs(layer: Layer, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The dense reference, on the dequantized weights."""
    from fusegraph.ops.gptq import dequantize
    from fusegraph.testing import DenseAttentionReference

    w = {}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        t = {k.split(".")[-1]: v for k, v in layer.weights.items() if k.startswith(proj + ".")}
        w[proj] = (
            dequantize(
                t["qweight"],
                t["scales"],
                t.get("qzeros"),
                t.get("g_idx"),
                bits=QUANT.bits,
                group_size=QUANT.group_size,
                sym=QUANT.sym,
                zero_format=QUANT.zero_format,
            )
            .float()
            .T
        )
    ref = DenseAttentionReference(
        w["q_proj"], w["k_proj"], w["v_proj"], w["o_proj"], HEADS, KV_HEADS, HEAD_DIM
    )
    outs, offset = [], 0
    for tokens, x in zip(STEPS, xs, strict=True):
        rows = list(torch.split(x, tokens))
        outs.append(ref.step(rows))
        offset += sum(tokens)
    cache = torch.cat([torch.cat([ref.keys[b], ref.values[b]]) for b in range(len(STEPS[0]))])
    return outs, cache


def max_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest absolute difference over all steps."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


RunRow = tuple[str, str, list[torch.Tensor], torch.Tensor, float, float]
"""(backend, graph form, outputs per step, final cache, compile seconds, run seconds)."""


def run_tour(device: str, backends: list[str], dump_dir: str | None, color: bool) -> int:
    """Run the five steps and print the summary table. Returns the exit status."""
    out = Printer(color=color, dump_dir=Path(dump_dir) if dump_dir else None)
    dev = DeviceRef.CPU() if device == "cpu" else DeviceRef.GPU(0)
    out.title("fusegraph demo: GPTQ attention (4-bit, group 32, act-order, GQA 8/2, paged cache)")

    out.step(1, "build the layer from quantize_gptq weights")
    unfused_layer = make_layer(dev, fuse=False)
    graph = build_graph(unfused_layer, dev, "attn")
    out.ir("unfused IR", str(graph), "1-unfused.mlir")

    out.step(2, "fuse-rope-split-store,cse,dce")
    from fusegraph.passes import PassManager

    fused = graph.clone()
    stats = PassManager("fuse-rope-split-store,cse,dce").run(fused)
    out.text(str(stats))
    out.diff("fused IR (changes against the unfused IR)", str(graph), str(fused), "2-fused.mlir")

    out.step(3, "lower to torch-mlir")
    lower_excerpts(out, graph, fused)

    out.step(4, f"run a ragged prefill {STEPS[0]} + 2 decode steps on {device}")
    xs = step_inputs()
    ref_outs, ref_cache = reference_outputs(unfused_layer, xs)
    rows: list[RunRow] = []
    for backend in backends:
        # "unfused" runs the graph as built; "fused" is what compile() does by default: the
        # default pipeline (which fuses as in step 2) on the same unfused graph.
        for form, pipeline in (("unfused", None), ("fused", "default")):
            start = time.perf_counter()
            out.progress(f"compiling {form} graph for {backend} on {device} ...")
            model = fusegraph.compile(
                graph, backend=backend, device=device, weights=unfused_layer.weights, pipeline=pipeline
            )
            compile_s = time.perf_counter() - start
            out.progress(f"{backend}/{form}: pipeline {model.pipeline or 'none (the graph as built)'}")
            run_steps(
                model, unfused_layer, xs, device
            )  # warm-up: kernel JIT and caches stay out of the timing
            outs, cache, run_s = run_steps(model, unfused_layer, xs, device)
            rows.append((backend, form, outs, cache, compile_s, run_s))
            out.progress(
                f"{backend}/{form}: compiled in {compile_s:.2f} s, 3 steps in {run_s * 1e3:.1f} ms (warm)"
            )

    out.step(5, "summary")
    table = summary_rows(rows, ref_outs, ref_cache)
    out.table(
        [
            "backend",
            "graph",
            "max |out - ref|",
            "max |cache - ref|",
            "vs unfused (out)",
            "compile s",
            "3 steps ms",
        ],
        table,
    )
    worst = max(max(float(r[2]), float(r[3])) for r in table)
    ok = worst < 1e-3
    out.text(("PASS" if ok else "FAIL") + f": worst error {worst:.2e} (f32 tolerance 1e-3)")
    return 0 if ok else 1


def summary_rows(
    rows: list[RunRow], ref_outs: list[torch.Tensor], ref_cache: torch.Tensor
) -> list[list[str]]:
    """One table row per (backend, graph form)."""
    unfused = {r[0]: r[2] for r in rows if r[1] == "unfused"}
    table = []
    for backend, form, outs, cache, compile_s, run_s in rows:
        cache_err = float((cache - ref_cache).abs().max())
        table.append(
            [
                backend,
                form,
                f"{max_err(outs, ref_outs):.2e}",
                f"{cache_err:.2e}",
                f"{max_err(outs, unfused[backend]):.2e}",
                f"{compile_s:.2f}",
                f"{run_s * 1e3:.1f}",
            ]
        )
    return table


def lower_excerpts(out: Printer, unfused: Graph, fused: Graph) -> None:
    """Show the custom op in custom mode and the op histogram of decomposed mode."""
    from fusegraph.compiler.lowering import to_torch_mlir

    try:
        import torch_mlir  # noqa: F401
    except ModuleNotFoundError:
        out.text("skipped: torch-mlir is not installed in this environment (pip install torch-mlir)")
        return

    custom = str(to_torch_mlir(fused, mode="custom"))
    out.dump("3-fused-custom.torch.mlir", custom)
    lines = [ln.strip() for ln in custom.splitlines() if "torch.operator" in ln]
    out.text("custom mode keeps the fused and quantized ops as single torch.operator calls:")
    for line in lines:
        out.code(line[:160] + (" ..." if len(line) > 160 else ""))
    decomposed = str(to_torch_mlir(fused, mode="decomposed"))
    out.dump("3-fused-decomposed.torch.mlir", decomposed)
    counts = Counter(
        tok.split("(")[0]
        for ln in decomposed.splitlines()
        for tok in ln.split()
        if tok.startswith("torch.aten.")
    )
    top = ", ".join(f"{name.removeprefix('torch.aten.')} x{n}" for name, n in counts.most_common(8))
    out.text(
        f"decomposed mode: {sum(counts.values())} aten ops, {decomposed.count('torch.operator')} torch.operator left"
    )
    out.text(f"  most used: {top}")
    dyn = [ln.strip() for ln in decomposed.splitlines() if "func.func" in ln][:1]
    out.text("  total_seq_len stays dynamic: " + (dyn[0][:150] + " ..." if dyn else "(no func found)"))
    out.dump("3-unfused-decomposed.torch.mlir", str(to_torch_mlir(unfused, mode="decomposed")))


__all__ = ["build_graph", "make_layer", "run_tour"]
