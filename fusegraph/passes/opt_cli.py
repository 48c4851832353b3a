"""`fusegraph opt`: run a pass pipeline over a text IR file, like `mlir-opt`.

Example:
    $ fusegraph opt model.mlir -p fuse-rope-split-store,canonicalize,cse,dce
    $ fusegraph opt tests.mlir -p canonicalize --split-input-file | filecheck tests.mlir
    $ fusegraph opt --list-passes
    $ fusegraph opt model.mlir --load-pass-plugin my_pass.py -p fold-mul-one,dce
    $ fusegraph opt model.mlir -p fuse-rope-split-store,dce --dot-compare fused.svg
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from fusegraph.compiler.errors import IRParseError, IRVerifyError
from fusegraph.compiler.parse import parse_module
from fusegraph.passes.manager import PassFailedError, PassManager, print_module
from fusegraph.passes.registry import PassPluginError, available_passes, load_pass_plugin

SPLIT_MARKER = "// -----"
_EXPECTED = re.compile(r"//\s*expected-error(?:@[+-]?\d+)?\s*\{\{(.*?)\}\}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `opt` subcommand to the `fusegraph` CLI."""
    p = subparsers.add_parser("opt", help="run a pass pipeline over text IR (like mlir-opt)")
    p.add_argument("file", nargs="?", default="-", help="input IR file ('-' = stdin)")
    p.add_argument("-p", "--pipeline", default="", help="passes, e.g. 'fuse-rope-split-store,cse,dce'")
    p.add_argument("-o", "--output", default="-", help="output file ('-' = stdout)")
    p.add_argument("--split-input-file", action="store_true", help=f"run each '{SPLIT_MARKER}' chunk alone")
    p.add_argument("--verify-diagnostics", action="store_true", help="check '// expected-error {{...}}'")
    p.add_argument("--print-ir-before-all", action="store_true")
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--print-ir-after-change", action="store_true")
    p.add_argument("--no-verify-each", action="store_true", help="verify only the input")
    p.add_argument("--pass-statistics", action="store_true", help="print per-pass statistics to stderr")
    p.add_argument("--debug", action="store_true", help="say why each pattern did not match (stderr)")
    p.add_argument("--list-passes", action="store_true", help="list the passes and their options")
    p.add_argument(
        "--load-pass-plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="import a Python file that calls fusegraph.passes.register_pass (repeatable)",
    )
    p.add_argument("--dot", metavar="OUT.svg", help="draw the resulting graph (Graphviz; .dot without it)")
    p.add_argument("--dot-compare", metavar="OUT.svg", help="draw the input graph beside the resulting graph")
    p.set_defaults(func=run_opt)
    return p


def list_passes() -> str:
    """One line per pass: name, options, and the first line of its docstring."""
    lines = []
    for name, load in available_passes().items():
        cls = load()
        opts = [f"{f.name}={f.default}" for f in dataclasses.fields(cls) if f.init]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"  {name}{'{' + ','.join(opts) + '}' if opts else ''}    {doc}")
    return "\n".join(["passes:", *lines])


def split_chunks(text: str, split: bool) -> list[tuple[int, str]]:
    """(first line number - 1, text) of each chunk; line numbers stay those of the file."""
    if not split:
        return [(0, text)]
    chunks: list[tuple[int, str]] = []
    start, current = 0, list[str]()
    for i, line in enumerate(text.splitlines(keepends=True)):
        if line.strip() == SPLIT_MARKER:
            chunks.append((start, "".join(current)))
            start, current = i + 1, []
        else:
            current.append(line)
    chunks.append((start, "".join(current)))
    return chunks


def run_chunk(
    text: str, filename: str, manager: PassManager, args: argparse.Namespace, index: int | None = None
) -> str:
    """Parse, run the pipeline, draw (with --dot/--dot-compare), print. Raises on failure.

    `index` numbers the picture files of one chunk among several (`out.2.svg`).
    """
    module = parse_module(text, filename)
    before = module.clone() if args.dot_compare else None
    stats = manager.run(module)
    if args.pass_statistics:
        print(stats, file=sys.stderr)
    draw_pictures(module, before, manager, args, index)
    return print_module(module)


def draw_pictures(
    after: ModuleOp,
    before: ModuleOp | None,
    manager: PassManager,
    args: argparse.Namespace,
    index: int | None,
) -> None:
    """Write the --dot and --dot-compare pictures of one chunk; say where on stderr."""
    if not (args.dot or args.dot_compare):
        return
    from fusegraph.compiler.dot import render, to_dot, to_dot_side_by_side
    from fusegraph.compiler.graph import Graph

    result = Graph(name="", module=after)
    jobs = []
    if args.dot:
        jobs.append((args.dot, lambda: to_dot(result)))
    if args.dot_compare and before is not None:
        title = f"after -p {manager.pipeline_text}".replace('"', "'")
        jobs.append(
            (
                args.dot_compare,
                lambda: to_dot_side_by_side(Graph(name="", module=before), result, ("input", title)),
            )
        )
    for path, make in jobs:
        written = render(make(), _numbered(path, index))
        note = "" if written.suffix == Path(path).suffix else " (Graphviz `dot` not found: wrote the text)"
        print(f"fusegraph opt: wrote {written}{note}", file=sys.stderr)


def _numbered(path: str, index: int | None) -> Path:
    """`out.svg`, or `out.<index>.svg` for one chunk of several."""
    p = Path(path)
    return p if index is None else p.with_name(f"{p.stem}.{index}{p.suffix}")


def reproducer(text: str, args: argparse.Namespace, manager: PassManager) -> str:
    """The one-line command that reproduces a failing chunk (saved to a temp file)."""
    with tempfile.NamedTemporaryFile("w", prefix="fusegraph-repro-", suffix=".mlir", delete=False) as f:
        f.write(text)
    cmd = ["fusegraph", "opt", f.name, "-p", manager.pipeline_text]
    for plugin in args.load_pass_plugin:
        cmd += ["--load-pass-plugin", str(Path(plugin).resolve())]
    cmd += [flag for flag in ("--no-verify-each", "--debug") if getattr(args, flag[2:].replace("-", "_"))]
    return "reproduce with: " + shlex.join(cmd)


def check_diagnostics(text: str, error: str | None) -> str | None:
    """With --verify-diagnostics: None when the chunk failed exactly as it expected."""
    expected = _EXPECTED.findall(text)
    if error is None:
        return f"expected error {expected[0]!r} was not produced" if expected else None
    if not expected:
        return f"unexpected error: {error}"
    missing = [e for e in expected if e not in error]
    return f"expected error {missing[0]!r}, got: {error}" if missing else None


def run_opt(args: argparse.Namespace) -> int:
    """Entry point of `fusegraph opt`; returns the exit status."""
    try:
        for plugin in args.load_pass_plugin:
            load_pass_plugin(plugin)
    except PassPluginError as err:
        print(f"fusegraph opt: error: {err}", file=sys.stderr)
        return 2
    if args.list_passes:
        print(list_passes())
        return 0
    try:
        manager = PassManager(
            args.pipeline,
            verify_each=not args.no_verify_each,
            print_ir_before_all=args.print_ir_before_all,
            print_ir_after_all=args.print_ir_after_all,
            print_ir_after_change=args.print_ir_after_change,
            debug=args.debug,
        )
    except ValueError as err:
        print(f"fusegraph opt: error: {err}", file=sys.stderr)
        return 2
    filename = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()  # noqa: SIM115
    except OSError as err:
        print(f"fusegraph opt: error: {err}", file=sys.stderr)
        return 2
    outputs, failed = [], False
    chunks = split_chunks(text, args.split_input_file)
    for index, (first_line, chunk) in enumerate(chunks):
        number = index if len(chunks) > 1 else None
        out, ok = _one_chunk("\n" * first_line + chunk, filename, manager, args, number)
        failed |= not ok
        if out is not None:
            outputs.append(out)
    _write(args.output, f"\n{SPLIT_MARKER}\n".join(o.rstrip("\n") for o in outputs) + "\n" if outputs else "")
    return 1 if failed else 0


def _one_chunk(
    chunk: str, filename: str, manager: PassManager, args: argparse.Namespace, index: int | None = None
) -> tuple[str | None, bool]:
    error = None
    out = None
    try:
        out = run_chunk(chunk, filename, manager, args, index)
    except (IRParseError, IRVerifyError, PassFailedError) as err:
        error = str(err)
    if args.verify_diagnostics:
        problem = check_diagnostics(chunk, error)
        if problem is not None:
            print(f"{filename}: {problem}", file=sys.stderr)
        return (out if error is None else None), problem is None
    if error is not None:
        print(f"{filename}: error: {error}", file=sys.stderr)
        print(reproducer(chunk.lstrip("\n"), args, manager), file=sys.stderr)
        return None, False
    return out, True


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w") as f:
        f.write(text)
