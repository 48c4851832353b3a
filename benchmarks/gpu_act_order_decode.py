"""What act-order costs a decode step: the plain model, act-order folded, act-order not folded, side by side.

Usage: `python benchmarks/gpu_act_order_decode.py [--batch 1 16 64] [--ctx 2048] [--profile] [--reverse] [--tiny]`

The Llama-3-8B-shaped GPTQ model of `gpu_model.py` (4-bit g128, stacked q/k/v and gate/up, random weights, every
sequence holding `ctx` cached tokens and adding one) is built three times in one process:

- plain: desc_act=False;
- act-order: desc_act=True (every projection's rows quantized in a random order), through the default pipeline, whose
  `fold-act-order-permutation` moves q/k/v's and gate/up's `x[:, perm]` into the norm in front of them, down's
  into gate/up's weights and o_proj's into the attention's stores;
- act-order, no fold: the same without that pass (as `FUSEGRAPH_FOLD_ACT_ORDER=0` runs it: every GEMM permutes its own
  input).

For each batch size it prints ms a step timed two ways, each the median of 30 (CUDA events on a GPU, each step
synchronized, as a generate loop that reads its token runs): `run(...)` (input copies, the CUDA-graph replay, the output
clone: what `gpu_model.py` reports) and a `model.bind(...)` step (the replay on bound tensors, no copies); then the bound
step's ms when 30 run back to back (the device's own time: the host's launch hidden behind the step before) and the
host µs one bound step's call takes (median of 30, the queue empty: chiefly `cudaGraphLaunch`, which a synchronized
step waits for); and each case over the plain model. `--profile` also prints, per batch, each kernel's device µs a
step (`CompiledGraph.profile`, 10 steps), the device's idle µs right before it and the µs by which it advanced the
step's end (`profile.advance`: under PDL, what it added beyond the kernel it overlapped), in every case side by side,
the kernels whose advance or idle differs most from the plain model's first: where act-order's time goes. Run it with
`FUSEGRAPH_PDL=0` for kernel times that do not overlap (with the PDL chain, a kernel's time includes its wait for the
one before). `--reverse` builds and times the cases in reverse order. `--tiny` is a dry run (2 small layers, no CUDA
graphs on the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
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
# kernel name: (device us, calls, the device's idle us right before it, us it advanced the step's end) a step
Kernels = dict[str, tuple[float, float, float, float]]


def case_ms(
    act_order: bool, fold: bool, batches: list[int], ctx: int, profile: bool
) -> tuple[dict[int, tuple[float, float, float, float]], dict[int, Kernels]]:
    """{batch: (run() ms, bound step ms, pipelined bound ms, launch us)} of one model, and {batch: its
    kernels} when `profile`."""
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
    results, kernels = {}, {}
    for bs in batches:
        manager, inputs = decode_inputs(model, max(batches) * pages, bs, ctx)
        (logits,) = run(*inputs)  # warm-up + capture
        if not bool(torch.isfinite(logits).all()):
            raise RuntimeError(f"act_order={act_order} fold={fold} bs {bs}: non-finite logits")
        step = run.bind(*inputs)
        step()
        results[bs] = (time_steps(lambda inputs=inputs: run(*inputs)), time_steps(step), *pipelined(step))
        if profile:
            report = run.profile(*inputs, steps=10)
            kernels[bs] = {
                name: (us, calls, report.idle.get(name, 0.0), report.advance.get(name, 0.0))
                for name, us, calls in report.ops
            }
        del manager, step
    return results, kernels


def pipelined(step: Callable[[], object], iters: int = 30) -> tuple[float, float]:
    """(ms a step when `iters` steps run back to back, median host µs of one call with the queue empty)."""
    step()
    sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
    sync()
    launches = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        launches.append((time.perf_counter() - start) * 1e6)
        sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) * 1e3 / iters, sorted(launches)[iters // 2]


def print_kernels(bs: int, by_case: dict[str, Kernels], rows: int = 14) -> None:
    """Each kernel's us a step (calls, the device's idle us right before it, and the us by which it advanced the
    step's end: `profile.advance`) in every case, the largest difference in advance or idle from the plain model
    first."""
    names = {name for kernels in by_case.values() for name in kernels}
    plain = by_case["plain"]
    none = (0.0, 0.0, 0.0, 0.0)

    def spread(name: str) -> float:
        base = plain.get(name, none)
        return max(
            abs(cell[3] - base[3]) + abs(cell[2] - base[2])
            for cell in (kernels.get(name, none) for kernels in by_case.values())
        )

    print(f"bs {bs}: device us a step (calls a step) idle us before, advance us; totals first")
    print("  " + "".join(f"{label:>38}" for label in by_case) + "  kernel")
    totals = [[sum(cell[i] for cell in kernels.values()) for i in (0, 2, 3)] for kernels in by_case.values()]
    print(
        "  "
        + "".join(f"{us:14.1f}         {idle:7.1f} {moved:7.1f}" for us, idle, moved in totals)
        + "  (all)"
    )
    for name in sorted(names, key=spread, reverse=True)[:rows]:
        cells = [kernels.get(name, none) for kernels in by_case.values()]
        print(
            "  "
            + "".join(
                f"{us:14.1f} ({calls:5.1f}) {idle:7.1f} {moved:7.1f}" for us, calls, idle, moved in cells
            )
            + f"  {name[:70]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument(
        "--profile", action="store_true", help="each kernel's device time a step, side by side"
    )
    parser.add_argument(
        "--reverse", action="store_true", help="build and time the cases in reverse order (an order effect?)"
    )
    parser.add_argument("--tiny", action="store_true", help="2 small layers (a dry run, e.g. on the CPU)")
    args = parser.parse_args()
    if args.tiny:
        gpu_model.SHAPE = replace(gpu_model.SHAPE, vocab_size=512, hidden_size=256, intermediate_size=512,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                  sliding_windows=(None, None))  # fmt: skip
        args.ctx = min(args.ctx, 64)
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, ctx {args.ctx}", flush=True)
    order = CASES[::-1] if args.reverse else CASES
    measured = {label: case_ms(act, fold, args.batch, args.ctx, args.profile) for label, act, fold in order}
    table = {label: times for label, (times, _) in measured.items()}
    print(
        f"{'bs':>4} {'case':>20} {'run() ms':>10} {'bound ms':>10} {'pipelined ms':>13} {'launch us':>10}"
        f" {'run / plain':>12} {'bound / plain':>14} {'pipelined / plain':>18}"
    )
    for bs in args.batch:
        plain = table["plain"][bs]
        for label, _, _ in CASES:
            ran, bound, back_to_back, launch = table[label][bs]
            print(
                f"{bs:>4} {label:>20} {ran:10.3f} {bound:10.3f} {back_to_back:13.3f} {launch:10.1f}"
                f" {ran / plain[0]:11.3f}x {bound / plain[1]:13.3f}x {back_to_back / plain[2]:17.3f}x"
            )

    if args.profile:
        for bs in args.batch:
            print_kernels(bs, {label: kernels[bs] for label, (_, kernels) in measured.items()})


if __name__ == "__main__":
    main()
