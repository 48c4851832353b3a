"""The decode step with and without programmatic dependent launch (`fusegraph/runtime/kernels/pdl.py`), side by side.

Usage: `python benchmarks/gpu_pdl.py [--batch 1 32] [--ctx 2048] [--modes 0 1 2] [--rounds 3]`

One Llama-3-8B-shaped GPTQ `DecoderModel` (as `gpu_model.py` builds it: random weights, 4-bit g128,
stacked q/k/v and gate/up, one CUDA graph a step) is compiled once per `FUSEGRAPH_PDL` mode; each
graph is captured under its mode. For each batch size every mode runs the same decode step on the
same KV cache (the step rewrites the same slots with the same values), so:

- the logits of every mode must equal mode 0's bit for bit (the chain reorders launches, never math):
  printed, and a mismatch exits non-zero;
- the modes are timed in turn, `--rounds` times (ms/step, median of 30 steps a round), so clock and
  thermal drift fall on all of them alike. Printed: each round, the best round of each mode, and its
  ratio to mode 0;
- with `--profile`, each mode's kernels (`runtime/profile.py`).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_model as GM  # noqa: E402, N812

from fusegraph.compiler import DeviceRef, DType  # noqa: E402
from fusegraph.nn import DecoderModel  # noqa: E402
from fusegraph.runtime.profile import profile_steps  # noqa: E402


def main() -> None:
    """Compile one runner per mode, check their logits agree, time them in turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--modes", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also print each mode's kernel profile")
    args = parser.parse_args()
    if GM.DEV != "cuda":
        sys.exit("gpu_pdl.py needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    config = replace(GM.SHAPE, dtype=DType.float16)
    model = DecoderModel(config, device=DeviceRef.GPU(0), stacked_qkv=True, stacked_gate_up=True,
                         max_seq_len=args.ctx + 64, page_size=GM.PAGE)  # fmt: skip
    model.load_state_dict(GM.random_state(model))
    pages = -(-(args.ctx + 1) // GM.PAGE)
    num_blocks = max(args.batch) * pages
    runs = {
        mode: model.compile(num_blocks, device="cuda", pipeline="default", cuda_graphs=True)
        for mode in args.modes
    }
    bad = False
    for bs in args.batch:
        manager = model.kv_manager(num_blocks)
        manager.kv_blocks.normal_(0, 1)
        seqs = [manager.claim(max_len=args.ctx + 1) for _ in range(bs)]
        manager.prepare(seqs, [args.ctx] * bs)
        manager.commit(seqs, [args.ctx] * bs)
        batch = manager.prepare(seqs, [1] * bs)
        tokens = torch.randint(0, config.vocab_size, (bs,), device="cuda")
        inputs = (tokens, batch.row_offsets, *batch.kv_inputs)
        logits = {}
        for mode, run in runs.items():
            os.environ["FUSEGRAPH_PDL"] = mode  # read while the first call captures the graph
            run(*inputs)
            (out,) = run(*inputs)
            logits[mode] = out.clone()
        base = logits[args.modes[0]]
        for mode, out in logits.items():
            same = torch.equal(out, base)
            bad |= not same
            diff = float((out.float() - base.float()).abs().max())
            print(
                f"bs {bs}: mode {mode} logits equal to mode {args.modes[0]}'s: {same} (max diff {diff:.3g})"
            )
        best: dict[str, float] = {}
        for r in range(args.rounds):
            line = []
            for mode, run in runs.items():
                ms = GM.time_steps(lambda run=run, inputs=inputs: run(*inputs))
                best[mode] = min(best.get(mode, ms), ms)
                line.append(f"mode {mode} {ms:.3f}")
            print(f"bs {bs} round {r}: " + ", ".join(line) + " ms/step", flush=True)
        ref = best[args.modes[0]]
        print(f"bs {bs} best: " + ", ".join(f"mode {m} {v:.3f} ms ({ref / v:.3f}x)" for m, v in best.items()))
        if args.profile:  # per-kernel device time; under PDL kernels overlap, so it can pass the wall time
            for mode, run in runs.items():
                report = profile_steps(
                    partial(run, *inputs), "cuda", f"bs {bs}, FUSEGRAPH_PDL={mode}", steps=5
                )
                print(report, flush=True)
        del manager
        torch.cuda.empty_cache()
    if bad:
        sys.exit("logits differ between modes")


if __name__ == "__main__":
    main()
