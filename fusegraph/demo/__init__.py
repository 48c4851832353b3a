"""`fusegraph demo`: one screen that shows what fusegraph does, and that it works.

1. builds a small GPTQ attention layer (4-bit, group 32, act-order, GQA, paged cache)
   from weights made by `quantize_gptq`;
2. prints the unfused IR, runs `fuse-rope-split-store,cse,dce` with statistics, and
   prints the fused IR with the change highlighted;
3. lowers both to torch-mlir (custom and decomposed) and shows the relevant excerpt;
4. runs a ragged prefill plus 2 decode steps on the eager and IREE backends;
5. prints the max error of fused vs unfused vs a dense reference, per backend, with timings.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `demo` subcommand."""
    p = sub.add_parser("demo", help="build, fuse, lower and run a GPTQ attention layer")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument(
        "--backend",
        choices=["eager", "iree", "all"],
        default="all",
        help="which backends to run (default: all = eager and iree)",
    )
    p.add_argument("--dump-dir", default=None, help="write every IR stage to files in this folder")
    p.add_argument("--no-color", action="store_true", help="plain text output")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fusegraph.demo.tour import run_tour

    backends = ["eager", "iree"] if args.backend == "all" else [args.backend]
    return run_tour(device=args.device, backends=backends, dump_dir=args.dump_dir, color=not args.no_color)
