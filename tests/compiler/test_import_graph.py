"""The import graph of `fusegraph` has no cycles, and the IR core imports nothing above it.

Every `import` statement counts, at any depth (a function-local import is still an edge),
except those under `if TYPE_CHECKING:`. An edge goes to the deepest `fusegraph` module the
statement names (`from fusegraph.ops import rope` is an edge to `fusegraph.ops.rope`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import fusegraph

PACKAGE_ROOT = Path(fusegraph.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imported_names(module: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def import_edges() -> dict[str, set[str]]:
    """module -> the fusegraph modules it imports."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name in _imported_names(module, path):
            if name.startswith("fusegraph") and (target := _resolve(name)) is not None and target != module:
                edges[module].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_import_graph__has_no_cycles() -> None:
    assert cycles(import_edges()) == []


def test_import_graph__the_ir_core_imports_nothing_above_it() -> None:
    above = sorted(
        f"{src} -> {dst}"
        for src, targets in import_edges().items()
        if src.startswith("fusegraph.compiler")
        for dst in targets
        if not dst.startswith("fusegraph.compiler")
    )
    assert above == []


def test_import_graph__the_checker_sees_a_cycle_and_a_function_local_import() -> None:
    # The checker itself: a two-module cycle made of one top-level and one local import.
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(edges) == [["a", "b"]]
    tree_edges = import_edges()
    assert "fusegraph.compiler.graph" in tree_edges["fusegraph.compiler.dot"]  # a top-level import
