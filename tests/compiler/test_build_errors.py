"""Bad builds raise ValueError naming the op, the operand, the dims and the user's line."""

from __future__ import annotations

import re

import pytest

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler import IRParseError, IRVerifyError
from fusegraph.dialect import parse
from tests.compiler.op_examples import EXAMPLES

CPU = DeviceRef.CPU()


def _graph(*types: TensorType) -> Graph:
    return Graph("g", input_types=list(types))


def test_matmul_mismatched_inner_dims_names_both_dims() -> None:
    with _graph(TensorType(DType.float32, ["n", 64], CPU), TensorType(DType.float32, [32, 8], CPU)) as g:
        x, w = g.inputs
        with pytest.raises(ValueError, match=r"matmul: lhs dim 1 \(64\) != rhs dim 0 \(32\)") as err:
            _ = x @ w
    assert re.search(r"test_build_errors.py:\d+", str(err.value)), "error must point at the user's line"


def test_reshape_to_different_element_count() -> None:
    with _graph(TensorType(DType.float32, ["n", 64], CPU)) as g:
        (x,) = g.inputs
        with pytest.raises(
            ValueError, match=r"fg.reshape: input shape \[n, 64\] has 64\*n elements, target shape \[n, 63\]"
        ):
            x.reshape(["n", 63])
        with pytest.raises(ValueError, match=r"fg.reshape: .*not divisible"):
            x.reshape([-1, 3])


def test_split_sizes_must_sum_to_dim() -> None:
    with _graph(TensorType(DType.float32, ["n", 64], CPU)) as g:
        (x,) = g.inputs
        with pytest.raises(
            ValueError, match=r"fg.split: sizes \['30', '30'\] sum to 60, but input dim 1 is 64"
        ):
            ops.split(x, [30, 30], axis=1)


def test_concat_mismatched_dtypes() -> None:
    with _graph(TensorType(DType.float32, ["n", 4], CPU), TensorType(DType.float16, ["n", 4], CPU)) as g:
        x, y = g.inputs
        with pytest.raises(ValueError, match=r"fg.concat: input 1 dtype float16 != input 0 dtype float32"):
            ops.concat([x, y], axis=1)


def test_operands_on_different_devices() -> None:
    gpu = DeviceRef.GPU(0)
    with _graph(TensorType(DType.float32, [4], CPU), TensorType(DType.float32, [4], gpu)) as g:
        x, y = g.inputs
        with pytest.raises(
            ValueError, match=r"fg.add: operands on different devices: lhs on cpu, rhs on gpu:0"
        ):
            _ = x + y


def test_broadcast_mismatch_names_dims() -> None:
    with _graph(TensorType(DType.float32, [4, 3], CPU), TensorType(DType.float32, [4, 5], CPU)) as g:
        x, y = g.inputs
        with pytest.raises(ValueError, match=r"fg.mul: lhs dim 1 \(3\) and rhs dim 1 \(5\) cannot broadcast"):
            _ = x * y


def test_graph_inputs_refuse_algebraic_dims() -> None:
    from fusegraph.compiler import Dim

    with pytest.raises(ValueError, match="algebraic dims"):
        Graph("g", input_types=[TensorType(DType.float32, [Dim("n") * 2], CPU)])


def test_malformed_ir_reports_file_line_and_column() -> None:
    text = str(EXAMPLES["fg.matmul"]()).replace("fg.relu", "fg.relux")
    with pytest.raises(IRParseError, match=r"^bad.mlir:\d+:\d+\n(.|\n)*Operation fg.relux is not registered"):
        parse(text, filename="bad.mlir")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("f32, cpu>", "f33, cpu>", "unknown dtype 'f33'; allowed: f32"),
        ("f32, cpu>", "f32, tpu>", "unknown device 'tpu'; allowed: cpu, gpu:N"),
        ("[batch, 64]", "[batch, $]", "Unexpected character"),
    ],
)
def test_malformed_types_report_position(old: str, new: str, message: str) -> None:
    text = str(EXAMPLES["fg.matmul"]()).replace(old, new, 1)
    with pytest.raises(IRParseError, match=r"^t.mlir:\d+:\d+") as err:
        parse(text, filename="t.mlir")
    assert message in str(err.value)


def test_parsed_ir_that_breaks_a_shape_rule_fails_verification() -> None:
    text = """builtin.module {
  func.func @g(%0: !fg.tensor<[n, 64], f32, cpu>) -> !fg.tensor<[n, 63], f32, cpu> {
    %1 = fg.reshape %0 : !fg.tensor<[n, 64], f32, cpu> -> !fg.tensor<[n, 63], f32, cpu>
    func.return %1 : !fg.tensor<[n, 63], f32, cpu>
  }
}
"""
    with pytest.raises(IRVerifyError, match=r"fg.reshape: input shape \[n, 64\] has 64\*n elements"):
        parse(text)
