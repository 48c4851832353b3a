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
from typing import TYPE_CHECKING

from fusegraph.compiler.errors import IRParseError, IRVerifyError

if TYPE_CHECKING:
    from fusegraph.compiler.graph import Graph

_MODES = ("custom", "decomposed")
_OUTPUT_TYPES = ("torch", "linalg-on-tensors", "tosa", "stablehlo")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
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
    from fusegraph.dialect import parse, read_ir_file, write_ir_file
    from fusegraph.passes.manager import PassFailedError

    try:
        text = read_ir_file(args.file)
    except (OSError, IRParseError) as err:
        print(f"fusegraph lower: error: {err}", file=sys.stderr)
        return 2
    try:
        graph = parse(text, filename=args.file if args.file != "-" else "<stdin>")
        if args.pipeline:
            _run_passes(graph, args.pipeline)
        if args.output_type == "tosa" and (unsupported := tosa_unsupported_ops(graph)):
            raise ValueError(
                "--output-type tosa lowers MLP-style graphs only (elementwise, matmul, reshape, permute, "
                "softmax, rms_norm; split/concat/slice on static dims); "
                f"this graph also has {', '.join(unsupported)}: use --output-type linalg-on-tensors or stablehlo"
            )
        module = to_torch_mlir(graph, mode=args.mode, output_type=args.output_type, dump_dir=args.dump_dir)
    except (IRParseError, IRVerifyError, PassFailedError, ValueError, TorchMlirLoweringError) as err:
        print(f"fusegraph lower: error: {err}", file=sys.stderr)
        print(f"reproduce with: {_command(args)}", file=sys.stderr)
        return 1
    except OSError as err:  # an unwritable --dump-dir
        print(f"fusegraph lower: error: {err}", file=sys.stderr)
        return 2
    if args.timings:
        print(" ".join(f"{k}={v:.3f}s" for k, v in module.timings.items()), file=sys.stderr)
    try:
        write_ir_file(args.output, str(module))
    except OSError as err:
        print(f"fusegraph lower: error: cannot write -o {args.output}: {err}", file=sys.stderr)
        return 2
    return 0


# What torch-mlir's TOSA backend legalizes: it has no dynamic-shape `aten.slice`/`aten.cat`,
# nor the gathers and `index_put` writes of rope, the KV cache and paged attention.
_TOSA_OPS = frozenset({
    "fg.add", "fg.sub", "fg.mul", "fg.div", "fg.neg", "fg.exp", "fg.rsqrt", "fg.silu", "fg.relu",
    "fg.clamp", "fg.cast", "fg.constant", "fg.weight", "fg.matmul", "fg.reshape", "fg.permute",
    "fg.softmax", "fg.rms_norm",
})  # fmt: skip
_TOSA_STATIC_OPS = frozenset({"fg.split", "fg.concat", "fg.slice"})  # with static shapes only


def tosa_unsupported_ops(graph: Graph) -> list[str]:
    """The ops of `graph` that `--output-type tosa` cannot lower, sorted (empty: all can).

    Example:
        >>> tosa_unsupported_ops(gptq_attention_graph())
        ['fg.attention.paged', 'fg.qmatmul.gptq', 'fg.rope_split_store']
    """
    bad = set()
    for op in graph.block.ops:
        if op.name in _TOSA_OPS or op.name.startswith("func."):
            continue
        values = [*op.operands, *op.results]
        if op.name in _TOSA_STATIC_OPS and all(d.is_static for v in values for d in v.type.shape):
            continue
        bad.add(op.name if op.name not in _TOSA_STATIC_OPS else f"{op.name} (on dynamic dims)")
    return sorted(bad)


def _run_passes(graph: Graph, pipeline: str) -> None:
    from fusegraph.passes.manager import PassManager

    PassManager(pipeline).run(graph)


def _command(args: argparse.Namespace) -> str:
    parts = ["fusegraph", "lower", args.file, "--mode", args.mode, "--output-type", args.output_type]
    if args.pipeline:
        parts += ["-p", args.pipeline]
    return shlex.join(parts)
