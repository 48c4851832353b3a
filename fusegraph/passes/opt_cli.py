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
import ast
import dataclasses
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

# xDSL, the IR core and the passes are imported where they are used, so that `--help` and
# `--list-passes` do not pay for them (or for torch, which the op families import).
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass

    from fusegraph.passes.manager import PassManager

SPLIT_MARKER = "// -----"
_EXPECTED = re.compile(r"//\s*expected-error(?:@[+-]?\d+)?\s*\{\{(.*?)\}\}")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
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
    p.add_argument(
        "--reproducer",
        metavar="DIR",
        help="save each failing chunk as DIR/fusegraph-repro-<n>.mlir (the reproducer command names it)",
    )
    p.set_defaults(func=run_opt)
    return p


def list_passes() -> str:
    """One line per pass: name, options, and the first line of its docstring."""
    from fusegraph.passes.registry import available_passes

    return _format_passes((name, load()) for name, load in available_passes().items())


def _format_passes(passes: Iterable[tuple[str, type[ModulePass]]]) -> str:
    lines = []
    for name, cls in passes:
        opts = [f"{f.name}={f.default}" for f in dataclasses.fields(cls) if f.init]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"  {name}{'{' + ','.join(opts) + '}' if opts else ''}    {doc}")
    return "\n".join(["passes:", *lines])


def list_passes_statically() -> str | None:
    """`list_passes()` read from the sources of the built-in passes, importing none of them.

    None when a pass does not fit the simple form read here (a loader that is not
    `from fusegraph.passes.<m> import <Class>`, a base class other than ModulePass, an option
    without a literal default): the caller then imports the passes.
    """
    here = Path(__file__).parent
    try:
        registry = ast.parse((here / "registry.py").read_text())
        loaders = {f.name: f for f in registry.body if isinstance(f, ast.FunctionDef)}
        (table,) = [
            _as(ast.Dict, n.value)
            for n in registry.body
            if isinstance(n, ast.AnnAssign) and ast.unparse(n.target) == "PASSES"
        ]
        lines = []
        for key, value in zip(table.keys, table.values, strict=True):
            name, loader = str(_as(ast.Constant, key).value), _as(ast.Name, value).id
            (imp,) = [n for n in loaders[loader].body if isinstance(n, ast.ImportFrom)]
            module = imp.module or ""
            if not module.startswith("fusegraph.passes."):
                raise ValueError(f"{loader} imports from {module}")
            source = here / f"{module.rpartition('.')[2]}.py"
            if not source.is_file():
                continue  # as available_passes() skips a pass whose module is missing
            lines.append((name, _static_pass_line(name, source, imp.names[0].name)))
    except (KeyError, ValueError, SyntaxError, OSError):
        return None
    return "\n".join(["passes:", *(line for _, line in sorted(lines))])


_Node = TypeVar("_Node", bound=ast.AST)


def _as(kind: type[_Node], node: ast.AST | None) -> _Node:
    """`node` if it is a `kind`; a ValueError (not the simple form) otherwise."""
    if not isinstance(node, kind):
        raise ValueError(f"expected {kind.__name__}, got {ast.dump(node) if node is not None else None}")
    return node


def _static_pass_line(name: str, source: Path, class_name: str) -> str:
    (cls,) = [
        n for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef) and n.name == class_name
    ]
    if [ast.unparse(b) for b in cls.bases] != ["ModulePass"]:
        raise ValueError(f"{class_name} has other bases")
    opts = []
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and "ClassVar" not in ast.unparse(stmt.annotation):
            field_name = _as(ast.Name, stmt.target).id
            opts.append(f"{field_name}={ast.literal_eval(_as(ast.expr, stmt.value))}")
    doc = (ast.get_docstring(cls) or "").strip().splitlines()
    return f"  {name}{'{' + ','.join(opts) + '}' if opts else ''}    {doc[0] if doc else ''}"


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
    from fusegraph.dialect import parse_module
    from fusegraph.passes.manager import print_module

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
    jobs: list[tuple[str, Callable[[], str]]] = []  # (output path, dot text maker)
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


def reproducer(text: str, args: argparse.Namespace, manager: PassManager, index: int | None) -> str:
    """The one-line command that reproduces a failing chunk.

    It names the input file; with `--reproducer DIR` the chunk is first saved as
    `DIR/fusegraph-repro-<n>.mlir` and the command names that file instead.
    """
    source = args.file
    if args.reproducer is not None:
        saved = Path(args.reproducer) / f"fusegraph-repro-{index or 0}.mlir"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(text)
        source = str(saved)
    cmd = ["fusegraph", "opt", source, "-p", manager.pipeline_text]
    if source == args.file and args.split_input_file:
        cmd.append("--split-input-file")
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
    if args.list_passes and not args.load_pass_plugin:
        print(list_passes_statically() or list_passes())
        return 0
    from fusegraph.compiler.errors import IRParseError
    from fusegraph.dialect import read_ir_file, write_ir_file
    from fusegraph.passes.manager import PassManager
    from fusegraph.passes.registry import PassPluginError, load_pass_plugin

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
        text = read_ir_file(args.file)
    except (OSError, IRParseError) as err:
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
    write_ir_file(
        args.output, f"\n{SPLIT_MARKER}\n".join(o.rstrip("\n") for o in outputs) + "\n" if outputs else ""
    )
    return 1 if failed else 0


def _one_chunk(
    chunk: str, filename: str, manager: PassManager, args: argparse.Namespace, index: int | None = None
) -> tuple[str | None, bool]:
    from fusegraph.compiler.errors import IRParseError, IRVerifyError
    from fusegraph.passes.manager import PassFailedError

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
        print(reproducer(chunk.lstrip("\n"), args, manager, index), file=sys.stderr)
        return None, False
    return out, True
