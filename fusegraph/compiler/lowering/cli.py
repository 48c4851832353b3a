"""`fusegraph lower`: lower a text IR file to torch-mlir, like `torch-mlir-opt` for fg.

Example:
    $ fusegraph lower model.mlir --mode custom
    $ fusegraph lower model.mlir --mode decomposed --output-type linalg-on-tensors -o model.linalg.mlir
    $ fusegraph lower model.mlir -p fuse-rope-split-store,cse,dce --mode custom | filecheck model.mlir
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from fusegraph.compiler.errors import IRParseError, IRVerifyError
from fusegraph.compiler.parse import parse

_MODES = ("custom", "decomposed")
_OUTPUT_TYPES = ("torch", "linalg-on-tensors", "tosa", "stablehlo")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `lower` subcommand to the `fusegraph` CLI."""
    p = subparsers.add_parser("lower", help="lower text IR to torch-mlir (torch, linalg, tosa, stablehlo)")
    p.add_argument("file", nargs="?", default="-", help="input IR file ('-' = stdin)")
    p.add_argument("--mode", choices=_MODES, default="custom", help="keep custom ops, or expand them to aten")
    p.add_argument("--output-type", choices=_OUTPUT_TYPES, default="torch", help="the dialect to stop at")
    p.add_argument("-o", "--output", default="-", help="output file ('-' = stdout)")
    p.add_argument(
        "-p", "--pipeline", default="", help="fg passes to run first, e.g. 'fuse-rope-split-store'"
    )
    p.add_argument("--dump-dir", default=None, help="also write the FX code and each stage's MLIR here")
    p.add_argument("--timings", action="store_true", help="print per-stage seconds to stderr")
    p.set_defaults(func=run_lower)
    return p


def run_lower(args: argparse.Namespace) -> int:
    """Parse, optionally run passes, lower, print. Errors print a reproducer and return 1."""
    from fusegraph.compiler.lowering.torch_mlir import TorchMlirLoweringError, to_torch_mlir

    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()  # noqa: SIM115
        graph = parse(text, filename=args.file if args.file != "-" else "<stdin>")
        if args.pipeline:
            _run_passes(graph, args.pipeline)
        module = to_torch_mlir(graph, mode=args.mode, output_type=args.output_type, dump_dir=args.dump_dir)
    except (OSError, IRParseError, IRVerifyError, ValueError, TorchMlirLoweringError) as err:
        print(f"fusegraph lower: error: {err}", file=sys.stderr)
        print(f"reproduce with: {_command(args)}", file=sys.stderr)
        return 1
    if args.timings:
        print(" ".join(f"{k}={v:.3f}s" for k, v in module.timings.items()), file=sys.stderr)
    _write_output(args.output, str(module))
    return 0


def _run_passes(graph: Any, pipeline: str) -> None:
    from fusegraph.passes.manager import PassManager

    PassManager(pipeline).run(graph)


def _write_output(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w") as f:
        f.write(text)


def _command(args: argparse.Namespace) -> str:
    parts = ["fusegraph", "lower", args.file, "--mode", args.mode, "--output-type", args.output_type]
    if args.pipeline:
        parts += ["-p", args.pipeline]
    return shlex.join(parts)
