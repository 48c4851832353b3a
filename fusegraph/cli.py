"""The `fusegraph` command: `opt`, `lower`, `run` and `demo`.

Each subcommand lives next to what it drives and adds itself through `add_parser`:
`fusegraph.passes.opt_cli`, `fusegraph.lower_cli`, `fusegraph.runtime.run_cli`
and `fusegraph.demo`. Only the named subcommand's module is imported, and torch only when
it is needed, so `fusegraph --help` and `fusegraph opt --list-passes` return at once.

Example:
    $ fusegraph --help
    $ fusegraph opt model.mlir -p fuse-rope-split-store,dce -o fused.mlir
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help); the help is here so that `--help` imports nothing.
_SUBCOMMANDS = {
    "opt": ("fusegraph.passes.opt_cli", "run a pass pipeline over text IR (like mlir-opt)"),
    "lower": (
        "fusegraph.lower_cli",
        "lower text IR to torch-mlir (torch, linalg, tosa, stablehlo)",
    ),
    "run": ("fusegraph.runtime.run_cli", "run a text IR graph on random inputs (eager or IREE)"),
    "demo": ("fusegraph.demo", "build, fuse, lower and run a GPTQ attention layer"),
    "model": ("fusegraph.nn.model_cli", "build a HF model directory's graph; print, lower or run it"),
    "generate": ("fusegraph.generate.cli", "generate text or token ids from a model directory"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fusegraph` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="fusegraph", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in _SUBCOMMANDS.items():
        if not argv or argv[0] != name:
            sub.add_parser(name, help=help_text)  # listed in --help without importing its module
            continue
        importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    if (problem := device_problem(getattr(args, "device", None))) is not None:
        print(f"fusegraph {args.command}: error: {problem}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except OSError as err:  # an unwritable -o / --dot / --dump-dir, a missing input, a full disk
        print(f"fusegraph {args.command}: error: {err}", file=sys.stderr)
        return 2


def device_problem(device: object) -> str | None:
    """Why `--device` cannot be used on this machine (no CUDA, no such GPU), or None.

    Example:
        >>> device_problem("cpu") is None
        True
    """
    if not isinstance(device, str) or not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return (
            f"--device {device}: CUDA is not available on this machine (torch.cuda.is_available() is False)"
        )
    index, count = device.partition(":")[2], torch.cuda.device_count()
    if index and (not index.isdigit() or int(index) >= count):
        return f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


if __name__ == "__main__":
    sys.exit(main())
