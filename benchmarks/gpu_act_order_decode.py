"""What act-order costs a decode step: the plain model, act-order folded, act-order not folded, side by side.

Usage: `python benchmarks/gpu_act_order_decode.py [--batch 1 16 64] [--ctx 2048] [--tiny]`

The Llama-3-8B-shaped GPTQ model of `gpu_model.py` (4-bit g128, stacked q/k/v and gate/up, random weights, every
sequence holding `ctx` cached tokens and adding one) is built three times in one process:

- plain: desc_act=False;
- act-order: desc_act=True (every projection's rows quantized in a random order), through the default pipeline, whose
  `fold-act-order-permutation` moves q/k/v's and gate/up's `x[:, perm]` into the norm in front of them and down's
  into gate/up's weights (o_proj's stays in its GEMM);
- act-order, no fold: the same without that pass (as `FUSEGRAPH_FOLD_ACT_ORDER=0` runs it: every GEMM permutes its own
  input).

For each batch size it prints ms a step timed two ways, each the median of 30 (CUDA events on a GPU): `run(...)`
(input copies, the CUDA-graph replay, the output clone: what `gpu_model.py` reports) and a `model.bind(...)` step (the
replay on bound tensors, no copies), and each case over the plain model. `--tiny` is a dry run (2 small layers, no
CUDA graphs on the CPU).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_model  # noqa: E402
from gpu_model import DEV, PAGE, decode_inputs, random_state, time_steps  # noqa: E402

from fusegraph.compiler import DeviceRef, DType  # noqa: E402
from fusegraph.nn import DecoderModel  # noqa: E402
from fusegraph.runtime.eager import CompiledGraph  # noqa: E402
from fusegraph.runtime.pipeline import default_pipeline  # noqa: E402

CASES = (("plain", False, True), ("act-order", True, True), ("act-order, no fold", True, False))


def case_ms(act_order: bool, fold: bool, batches: list[int], ctx: int) -> dict[int, tuple[float, float]]:
    """{batch: (run() ms, bound step ms)} of one model."""
    shape = gpu_model.SHAPE
    assert shape.quantization is not None
    shape = replace(shape, quantization=replace(shape.quantization, desc_act=act_order))
    config = replace(shape, dtype=DType.float16 if DEV == "cuda" else DType.float32)
    device = DeviceRef.GPU(0) if DEV == "cuda" else DeviceRef.CPU()
    model = DecoderModel(config, device=device, stacked_qkv=True, stacked_gate_up=True, max_seq_len=ctx + 64,
                         page_size=PAGE)  # fmt: skip
    torch.manual_seed(0)
    model.load_state_dict(random_state(model))
    pages = -(-(ctx + 1) // PAGE)
    pipeline = default_pipeline("eager", DEV, off=() if fold else ("fold-act-order-permutation",))
    run = model.compile(max(batches) * pages, device=DEV, pipeline=pipeline, cuda_graphs=DEV == "cuda")
    assert isinstance(run, CompiledGraph)  # the eager backend's, with `bind`
    results = {}
    for bs in batches:
        manager, inputs = decode_inputs(model, max(batches) * pages, bs, ctx)
        (logits,) = run(*inputs)  # warm-up + capture
        if not bool(torch.isfinite(logits).all()):
            raise RuntimeError(f"act_order={act_order} fold={fold} bs {bs}: non-finite logits")
        step = run.bind(*inputs)
        step()
        results[bs] = (time_steps(lambda inputs=inputs: run(*inputs)), time_steps(step))
        del manager, step
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--tiny", action="store_true", help="2 small layers (a dry run, e.g. on the CPU)")
    args = parser.parse_args()
    if args.tiny:
        gpu_model.SHAPE = replace(gpu_model.SHAPE, vocab_size=512, hidden_size=256, intermediate_size=512,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                  sliding_windows=(None, None))  # fmt: skip
        args.ctx = min(args.ctx, 64)
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, ctx {args.ctx}", flush=True)
    table = {label: case_ms(act, fold, args.batch, args.ctx) for label, act, fold in CASES}
    print(
        f"{'bs':>4} {'case':>20} {'run() ms':>10} {'bound ms':>10} {'run / plain':>12} {'bound / plain':>14}"
    )
    for bs in args.batch:
        plain = table["plain"][bs]
        for label, _, _ in CASES:
            ran, bound = table[label][bs]
            print(
                f"{bs:>4} {label:>20} {ran:10.3f} {bound:10.3f} {ran / plain[0]:11.3f}x {bound / plain[1]:13.3f}x"
            )


if __name__ == "__main__":
    main()
