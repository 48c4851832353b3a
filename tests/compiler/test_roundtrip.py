"""Print -> parse -> print is identical for every registered op."""

from __future__ import annotations

import pytest

from fusegraph.compiler import parse
from fusegraph.compiler.opbase import registered_ops
from tests.compiler.op_examples import EXAMPLES


def test_every_registered_op_has_a_round_trip_example() -> None:
    missing = sorted(op.name for op in registered_ops() if op.name not in EXAMPLES)
    assert not missing, f"ops without an entry in tests/compiler/op_examples.py: {missing}"


@pytest.mark.parametrize("op_name", sorted(EXAMPLES))
def test_op_round_trips_through_text(op_name: str) -> None:
    graph = EXAMPLES[op_name]()
    text = str(graph)
    assert op_name in text
    graph.verify()
    reparsed = parse(text, filename=f"{op_name}.mlir")
    assert str(reparsed) == text
    assert str(parse(str(reparsed))) == text


def test_symbolic_and_algebraic_dims_print_by_name() -> None:
    text = str(EXAMPLES["fg.reshape"]())
    assert "!fg.tensor<[total_seq_len, 96], f32, cpu>" in text
    assert "!fg.tensor<[total_seq_len, 6, 16], f32, cpu>" in text
