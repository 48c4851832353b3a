"""Frontend speed on the CPU: build + verify + the default pipeline + `to_torch_mlir(custom)` for
Llama-3-8B-shaped GPTQ decoder models (embedding, N blocks of attention + MLP, norm, lm_head)
of 8, 32 and 64 layers.

Usage: `.venv/bin/python benchmarks/frontend.py [--layers 8 32 64] [--repeat N] [--cpu-time] [--unfused] [--profile N]`

It prints each stage's seconds per model and the 64/32 ratio of every stage (2.0 means the
cost grows linearly). The target is the 32-layer model end to end in under 1.0 s on a 2-core
CPU, with a 64/32 ratio of at most 2.1. Weights are never materialized: the graph names them,
and lowering traces with fake tensors.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fusegraph import DType, Graph
from fusegraph.nn import DecoderModel, Llama3RopeScaling, ModelConfig, QuantizationConfig

LLAMA3_8B = ModelConfig(
    model_type="llama",
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=Llama3RopeScaling(8.0, 1.0, 4.0, 8192),
    max_position_embeddings=8192,
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    use_qk_norm=False,
    sliding_windows=(None,) * 32,
    dtype=DType.bfloat16,
    quantization=QuantizationConfig(bits=4, group_size=128, desc_act=False, sym=True),
)


# Wall time by default; `--cpu-time` measures this process's CPU time instead (a fairer number
# on a machine shared with other jobs: waiting for a core is not counted).
CLOCK: Callable[[], float] = time.perf_counter


def llama3_8b(num_layers: int, *, fuse: bool = True) -> DecoderModel:
    """The Llama-3-8B-shaped GPTQ model with `num_layers` blocks, as `load_model` builds it
    (desc_act=False: q/k/v and gate/up stacked when `fuse`)."""
    config = replace(LLAMA3_8B, num_hidden_layers=num_layers, sliding_windows=(None,) * num_layers)
    return DecoderModel(config, fuse=fuse, stacked_qkv=fuse, stacked_gate_up=fuse, page_size=128)


def build(num_layers: int, fuse: bool = True) -> Graph:
    """The model's graph over a 1024-page cache."""
    return llama3_8b(num_layers, fuse=fuse).build_graph(num_blocks=1024)


def stages(num_layers: int, fuse: bool = True) -> dict[str, float]:
    """Seconds spent in each stage for one model."""
    from fusegraph.compiler.lowering import to_torch_mlir
    from fusegraph.passes import PassManager

    times: dict[str, float] = {}
    holder: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> None:
        start = CLOCK()
        holder[name] = fn()
        times[name] = CLOCK() - start

    gc.collect()  # start each model without the previous one's garbage
    timed("build", lambda: build(num_layers, fuse))
    graph = holder["build"]
    timed("verify", graph.verify)
    from fusegraph.runtime.pipeline import default_pipeline

    pipeline = default_pipeline("eager", "cpu")
    timed("passes", lambda: PassManager(pipeline, verify_each=False).run(graph))
    fused = str(graph).count("fg.rope_split_store ")
    if fused != num_layers:
        raise RuntimeError(f"expected {num_layers} fused ops after the passes, found {fused}")

    def lower() -> str:
        holder["to_torch_mlir_module"] = module = to_torch_mlir(graph, mode="custom")
        return str(module)

    timed("to_torch_mlir", lower)
    times["total"] = sum(times.values())
    module = holder["to_torch_mlir_module"]
    if (path := module.fx_module.meta["fusegraph_lowering"]) != "direct":
        raise RuntimeError(f"to_aten_fx took the {path} path: {module.fx_module.meta}")
    times["(to_aten_fx)"] = module.timings["to_aten_fx"]  # wall time, inside to_torch_mlir
    return times


def main() -> None:
    """Run the models and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--unfused", action="store_true", help="build unfused; the pipeline fuses rope/store")
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of N runs per size")
    parser.add_argument("--cpu-time", action="store_true", help="time.process_time instead of wall time")
    parser.add_argument(
        "--profile", type=int, default=0, help="profile one model of N layers with pyinstrument"
    )
    args = parser.parse_args()
    fuse = not args.unfused
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as profiler:
            stages(args.profile, fuse)
        profiler.print()
        return
    stages(2, fuse)  # warm up imports, caches and torch's first-call costs
    # The fastest of --repeat runs per size (by total): a shared box adds noise, never speed.
    results = {
        n: min((stages(n, fuse) for _ in range(args.repeat)), key=lambda t: t["total"]) for n in args.layers
    }
    names = list(next(iter(results.values())))
    print(f"{'layers':>7} " + " ".join(f"{n:>14}" for n in names))
    for n, t in results.items():
        print(f"{n:>7} " + " ".join(f"{t[s]:>13.3f}s" for s in names))
    if 32 in results and 64 in results:
        print(f"{'64/32':>7} " + " ".join(f"{results[64][s] / results[32][s]:>14.2f}" for s in names))


if __name__ == "__main__":
    main()
