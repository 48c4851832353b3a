"""`fusegraph demo`: the end-to-end tour (build, fuse, lower, run)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the `demo` subcommand."""
    p = sub.add_parser("demo", help="build, fuse, lower and run a GPTQ attention layer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and print a small graph."""
    from fusegraph import DeviceRef, DType, Graph, TensorType, ops

    cpu = DeviceRef.CPU()
    with Graph("mlp", input_types=[TensorType(DType.float32, ["batch", 64], cpu)]) as g:
        (x,) = g.inputs
        w = g.add_weight("w", TensorType(DType.float32, [64, 64], cpu))
        g.output(ops.relu(x @ w.T))  # type: ignore[arg-type]
    print(g)
    return 0
