"""Graph pictures: nodes per op, edges labelled with types, fused ops highlighted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fusegraph.compiler import dot
from tests.compiler.op_examples import EXAMPLES


def test_to_dot_has_a_node_per_op_and_typed_edges() -> None:
    graph = EXAMPLES["fg.matmul"]()
    text = dot.to_dot(graph)
    assert text.startswith('digraph "mlp" {')
    for op_name in ("fg.matmul", "fg.permute", "fg.relu", "weight\\nlayers.0.w", "output", "input 0"):
        assert op_name in text
    assert 'label="[batch, 64], f32, cpu"' in text
    assert text.count("->") == sum(len(op.operands) for op in graph.block.ops)


def test_side_by_side_puts_two_clusters_in_one_picture() -> None:
    text = dot.to_dot_side_by_side(EXAMPLES["fg.matmul"](), EXAMPLES["fg.reshape"]())
    assert "subgraph cluster_0" in text and "subgraph cluster_1" in text
    assert 'label="unfused"' in text and 'label="fused"' in text


def test_render_writes_dot_text_when_graphviz_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _: None)  # the module dot.render calls
    out = dot.render(dot.to_dot(EXAMPLES["fg.matmul"]()), tmp_path / "g.svg")
    assert out == tmp_path / "g.dot"
    assert out.read_text().startswith("digraph")
