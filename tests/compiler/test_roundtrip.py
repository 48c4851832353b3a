"""Print -> parse -> print is identical for every registered op."""

from __future__ import annotations

import pytest

from fusegraph.compiler.opbase import registered_ops
from fusegraph.dialect import parse
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


def test_every_registered_op_has_a_torch_implementation() -> None:
    from fusegraph.compiler.impls import _TORCH_IMPLS

    # fg.weight is bound as a graph placeholder by the lowering drivers, never computed.
    missing = sorted(op.name for op in registered_ops() if op not in _TORCH_IMPLS and op.name != "fg.weight")
    assert not missing, f"ops without a @torch_impl: {missing}"


def test_register_op_refuses_an_op_without_a_shape_rule() -> None:
    import pytest
    from xdsl.irdl import irdl_op_definition, result_def

    from fusegraph.compiler.opbase import FgOp, register_op
    from fusegraph.compiler.types import TensorType

    @irdl_op_definition
    class NoRuleOp(FgOp):
        name = "fg.test_no_rule"
        result = result_def(TensorType)

    with pytest.raises(TypeError, match=r"NoRuleOp \(fg.test_no_rule\): an FgOp must implement infer_types"):
        register_op(NoRuleOp)
