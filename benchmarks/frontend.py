"""Frontend speed on the CPU: build + verify + `fuse-rope-split-store,cse,dce` +
`to_torch_mlir(custom)` for Llama-3-8B-shaped GPTQ attention stacks of 8, 32 and 64 layers.

Usage: `.venv/bin/python benchmarks/frontend.py [--layers 8 32 64] [--profile N]`

It prints each stage's seconds per stack and the 64/32 ratio of every stage (2.0 means the
cost grows linearly). The target is a 32-layer stack end to end in under 2 s on a 2-core CPU.
Weights are never materialized: the graph names them, and lowering traces with fake tensors.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.nn import (
    GPTQAttentionWithRope,
    KVCacheParams,
    LayerList,
    Module,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
)

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 4096, 32, 8, 128
QUANT = QuantizationConfig(bits=4, group_size=128, desc_act=False, sym=True)


class DecoderBlock(Module):
    """Only the attention of a decoder block, named as HF names it (`self_attn`)."""

    def __init__(self, attn: GPTQAttentionWithRope) -> None:
        super().__init__()
        self.self_attn = attn


def build(num_layers: int) -> Graph:
    """A stack of `num_layers` unfused GPTQ attention layers sharing one paged cache."""
    cpu = DeviceRef.CPU()
    kv_params = KVCacheParams(
        dtype=DType.bfloat16,
        n_kv_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        num_layers=num_layers,
        page_size=128,
        devices=[cpu],
    )
    rope = RotaryEmbedding(dim=HIDDEN, n_heads=HEADS, theta=500000.0, max_seq_len=8192, interleaved=False)
    blocks = [
        DecoderBlock(
            GPTQAttentionWithRope(
                quantization_config=QUANT,
                rope=rope,
                num_attention_heads=HEADS,
                num_key_value_heads=KV_HEADS,
                hidden_size=HIDDEN,
                kv_params=kv_params,
                dtype=DType.bfloat16,
                _fuse_rope_and_store=False,
            )
        )
        for _ in range(num_layers)
    ]
    stack = LayerList(blocks)
    stack._set_prefix("layers.")  # noqa: SLF001 - a root-level stack named like HF's
    kv_types = [
        TensorType(DType.uint32, ["batch"], cpu),
        TensorType(DType.uint32, ["batch", "max_pages"], cpu),
    ]
    from fusegraph.compiler import BufferType

    blocks_type = BufferType(DType.bfloat16, [1024, 2, num_layers, 128, KV_HEADS, HEAD_DIM], cpu)
    inputs = [
        TensorType(DType.bfloat16, ["total_seq_len", HIDDEN], cpu),
        TensorType(DType.uint32, ["batch_plus_1"], cpu),
    ]
    with Graph(f"llama3_8b_attn_x{num_layers}", input_types=[*inputs, blocks_type, *kv_types]) as g:
        x, row_offsets, *kv_inputs = g.inputs
        kv = PagedCacheValues(*kv_inputs)
        freqs = rope.freqs_cis
        for i, block in enumerate(stack):
            x = block.self_attn(i, x, kv, freqs, row_offsets)  # type: ignore[attr-defined]
        g.output(x)
    return g


def stages(num_layers: int) -> dict[str, float]:
    """Seconds spent in each stage for one stack."""
    from fusegraph.compiler.lowering import to_torch_mlir
    from fusegraph.passes import PassManager

    times: dict[str, float] = {}
    holder: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        holder[name] = fn()
        times[name] = time.perf_counter() - start

    timed("build", lambda: build(num_layers))
    graph = holder["build"]
    timed("verify", graph.verify)
    timed("passes", lambda: PassManager("fuse-rope-split-store,cse,dce").run(graph))
    fused = str(graph).count("fg.rope_split_store ")
    if fused != num_layers:
        raise RuntimeError(f"expected {num_layers} fused ops after the passes, found {fused}")
    timed("to_torch_mlir", lambda: str(to_torch_mlir(graph, mode="custom")))
    times["total"] = sum(times.values())
    return times


def main() -> None:
    """Run the stacks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument(
        "--profile", type=int, default=0, help="profile one stack of N layers with pyinstrument"
    )
    args = parser.parse_args()
    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as profiler:
            stages(args.profile)
        profiler.print()
        return
    stages(2)  # warm up imports, caches and torch's first-call costs
    results = {n: stages(n) for n in args.layers}
    names = list(next(iter(results.values())))
    print(f"{'layers':>7} " + " ".join(f"{n:>14}" for n in names))
    for n, t in results.items():
        print(f"{n:>7} " + " ".join(f"{t[s]:>13.3f}s" for s in names))
    if 32 in results and 64 in results:
        print(f"{'64/32':>7} " + " ".join(f"{results[64][s] / results[32][s]:>14.2f}" for s in names))


if __name__ == "__main__":
    main()
