"""The `fusegraph` command: `opt`, `lower`, `run` and `demo`.

Each subcommand lives next to what it drives and adds itself through `add_parser`:
`fusegraph.passes.opt_cli`, `fusegraph.compiler.lowering.cli`, `fusegraph.runtime.run_cli`
and `fusegraph.demo`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_SUBCOMMANDS = {
    "opt": "fusegraph.passes.opt_cli",
    "lower": "fusegraph.compiler.lowering.cli",
    "run": "fusegraph.runtime.run_cli",
    "demo": "fusegraph.demo",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fusegraph` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="fusegraph", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in _SUBCOMMANDS.items():
        if argv and argv[0] != name and argv[0] not in ("-h", "--help"):
            sub.add_parser(name)  # listed in --help without importing its module
            continue
        importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
