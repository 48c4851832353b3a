"""IREE CPU timings of the in-place KV cache.

1. The demo's layer and steps (`fusegraph demo`'s 3 steps, fused): the in-place module against
   the functional form, same graph, same process.
2. A 2-layer GPTQ attention stack (the tests' small shapes) on a large cache (`--blocks`,
   2 KiB per block): one decode step of the in-place module whose entry consumes the cache
   (`iree_inplace.compile_inplace`, what `compile_iree` builds) against the same module with
   the cache import borrowed (IREE's default, which keeps copy-on-write clones of the cache).

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/iree_cpu_demo_timing.py [--runs 21] [--blocks 16384]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.lowering._graphs

import fusegraph  # noqa: E402
from fusegraph import DeviceRef, DType  # noqa: E402
from fusegraph.demo.tour import build_graph, make_layer, reference_outputs, run_steps, step_inputs  # noqa: E402


def _times(fn: Callable[[], float], runs: int) -> tuple[float, float]:
    fn()  # warm-up
    times = [fn() for _ in range(runs)]
    return min(times) * 1e3, statistics.median(times) * 1e3


def demo(runs: int) -> None:
    dev = DeviceRef.CPU()
    layer = make_layer(dev, fuse=False)
    graph = build_graph(layer, dev, "attn")
    xs = step_inputs()
    ref_outs, _ = reference_outputs(layer, xs)
    for inplace in (False, True):
        m = fusegraph.compile(
            graph, backend="iree", device="cpu", weights=layer.weights, pipeline="default", inplace=inplace
        )

        def steps(m: Any = m) -> float:
            return run_steps(m, layer, xs, "cpu")[2]

        best, median = _times(steps, runs)
        outs = run_steps(m, layer, xs, "cpu")[0]
        err = max(float((o - r).abs().max()) for o, r in zip(outs, ref_outs, strict=True))
        print(
            f"demo, iree cpu fused inplace={inplace}: 3 steps min {best:.2f} ms, median {median:.2f} ms "
            f"over {runs} runs; max |out-ref| {err:.2e}"
        )


def stack(runs: int, blocks: int) -> None:
    from fusegraph.compiler.lowering.torch_mlir import to_torch_mlir
    from fusegraph.runtime.iree_backend import IreeCompiledGraph
    from fusegraph.runtime.iree_compile import compile_vmfb, target_flags
    from fusegraph.runtime.iree_inplace import consume_safe
    from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager
    from tests.lowering._graphs import AttnShape, gptq_attention_graph, gptq_attention_weights

    shape = AttnShape(num_blocks=blocks)
    graph = gptq_attention_graph(2, fused=True, s=shape)
    weights = gptq_attention_weights(graph, s=shape)
    assert consume_safe(graph)
    text = to_torch_mlir(graph, mode="decomposed", inplace_buffers=True, outputs_as_args=True).text
    params = SimpleNamespace(
        dtype=DType.float32, n_kv_heads=shape.n_kv_heads, head_dim=shape.head_dim, num_layers=2,
        page_size=shape.page_size,
    )  # fmt: skip
    results = {}
    for consume in (False, True):
        path, _ = compile_vmfb(text, target_flags("cpu"), name="stack2", consume=consume)
        model = IreeCompiledGraph(graph, weights=weights, vmfb=path)
        manager = PagedKVCacheManager(params, num_blocks=blocks)
        seqs = [manager.claim(max_len=16) for _ in range(3)]
        gen = torch.Generator().manual_seed(0)
        batch = manager.prepare(seqs, [5, 7, 1])  # prefill, then time one decode step
        model(torch.randn(13, shape.hidden, generator=gen), batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, [5, 7, 1])
        batch = manager.prepare(seqs, [1, 1, 1])
        x = torch.randn(3, shape.hidden, generator=gen)

        def step(model: IreeCompiledGraph = model, batch: Any = batch, x: torch.Tensor = x) -> float:
            start = time.perf_counter()
            model(x, batch.row_offsets, *batch.kv_inputs)
            return time.perf_counter() - start

        best, median = _times(step, runs)
        results[consume] = manager.kv_blocks.clone()
        mib = manager.kv_blocks.numel() * 4 / 2**20
        form = "consumed (now)" if consume else "borrowed (before)"
        print(
            f"2-layer stack, cache {mib:.0f} MiB, decode bs 3, entry import {form}: "
            f"min {best:.3f} ms, median {median:.3f} ms over {runs} runs"
        )
    print(f"caches equal: {torch.equal(results[False], results[True])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--blocks", type=int, default=16384)
    args = parser.parse_args()
    demo(args.runs)
    stack(args.runs, args.blocks)


if __name__ == "__main__":
    main()
