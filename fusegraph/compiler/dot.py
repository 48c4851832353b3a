"""Graph pictures: `to_dot(graph)` gives Graphviz text; `render(...)` writes SVG/PNG when the
`dot` binary is installed and the `.dot` text otherwise.

Ops are nodes, values are edges labelled with their types; graph inputs, weights and
outputs get their own node shapes; fused ops (`fg.rope_split_store`, `fg.custom`) are
highlighted. `to_dot_side_by_side(before, after)` puts two graphs in one picture.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.weight import WeightOp

FUSED_OPS = frozenset({"fg.rope_split_store", "fg.custom"})
_FUSED_STYLE = 'style="filled,bold", fillcolor="#ffd27f", color="#c06000", penwidth=2'
_OP_STYLE = 'style=filled, fillcolor="#e8eef7"'


def _short_type(value: SSAValue) -> str:
    text = str(value.type)
    return text.replace("!fg.tensor<", "").replace("!fg.buffer<", "buffer<").rstrip(">")


def _op_label(op: Operation) -> str:
    if isinstance(op, WeightOp):
        return f"weight\\n{op.weight_name}"
    props = []
    for name in ("layer_idx", "key_or_value", "interleaved", "bits", "axis"):
        if (attr := op.properties.get(name)) is not None:
            props.append(f"{name}={_attr_text(attr)}")
    return op.name + ("\\n" + ", ".join(props) if props else "")


def _attr_text(attr: object) -> str:
    value = getattr(attr, "value", attr)
    return str(getattr(value, "data", value))


def _body(graph: Graph, prefix: str) -> list[str]:
    lines: list[str] = []
    ids: dict[SSAValue, str] = {}
    for i, arg in enumerate(graph.block.args):
        node = f"{prefix}in{i}"
        ids[arg] = node
        lines.append(f'  {node} [label="input {i}", shape=invhouse, style=filled, fillcolor="#d9f2d9"];')
    for n, op in enumerate(graph.block.ops):
        node = f"{prefix}op{n}"
        if isinstance(op, func.ReturnOp):
            lines.append(f'  {node} [label="output", shape=house, style=filled, fillcolor="#f2d9d9"];')
        else:
            style = _FUSED_STYLE if op.name in FUSED_OPS else _OP_STYLE
            shape = "note" if isinstance(op, WeightOp) else "box"
            lines.append(f'  {node} [label="{html.escape(_op_label(op))}", shape={shape}, {style}];')
        for operand in op.operands:
            label = html.escape(_short_type(operand))
            lines.append(f'  {ids[operand]} -> {node} [label="{label}", fontsize=9];')
        for result in op.results:
            ids[result] = node
    return lines


def to_dot(graph: Graph) -> str:
    """Graphviz text for `graph`: op nodes, value edges labelled with their types."""
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB; node [fontname=Helvetica];"]
    lines += _body(graph, "g")
    return "\n".join([*lines, "}"]) + "\n"


def to_dot_side_by_side(before: Graph, after: Graph, titles: tuple[str, str] = ("unfused", "fused")) -> str:
    """Two graphs as clusters of one picture (for example unfused beside fused)."""
    lines = ['digraph "compare" {', "  rankdir=TB; node [fontname=Helvetica];"]
    for k, (graph, title) in enumerate(zip((before, after), titles, strict=True)):
        lines.append(f'  subgraph cluster_{k} {{ label="{title}"; fontsize=16;')
        lines += ["  " + line for line in _body(graph, f"c{k}_")]
        lines.append("  }")
    return "\n".join([*lines, "}"]) + "\n"


def render(dot_text: str, path: str | Path) -> Path:
    """Write `dot_text` to `path`, rendered by Graphviz when `dot` is installed.

    Returns the path written: `path` itself (`.svg`/`.png`/`.pdf`) when `dot` is found,
    otherwise the same name with a `.dot` suffix holding the text.
    """
    path = Path(path)
    if path.suffix == ".dot" or (dot := shutil.which("dot")) is None:
        out = path.with_suffix(".dot")
        out.write_text(dot_text)
        return out
    subprocess.run(
        [dot, f"-T{path.suffix.lstrip('.')}", "-o", str(path)], input=dot_text, text=True, check=True
    )
    return path
