"""fg.custom: registration, build, print/parse, run through fusegraph.compile, errors, opcheck."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler import IRVerifyError
from fusegraph.compiler.lowering import to_fx
from fusegraph.dialect import parse
from fusegraph.ops.custom import ParamValue, decode_parameters, registered_custom_ops

CPU = DeviceRef.CPU()
F32 = DType.float32


def _t(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def _scaled_add_rule(types: list, params: dict) -> list[TensorType]:
    x, y = types
    if x.shape != y.shape:
        raise ValueError(
            f"test.scaled_add: x shape {list(map(str, x.shape))} != y shape {list(map(str, y.shape))}"
        )
    return [x, TensorType(params["prod_dtype"], x.shape, x.device)]


def _scaled_add_torch(
    x: torch.Tensor, y: torch.Tensor, *, alpha: int, prod_dtype: DType, negate: bool, tag: str
):
    total = x + alpha * y
    return (-total if negate else total), (x * y).to(prod_dtype.to_torch())


SPEC = ops.register_custom_op("test.scaled_add", _scaled_add_rule, _scaled_add_torch)
PARAMS: dict[str, ParamValue] = {"alpha": 3, "prod_dtype": DType.bfloat16, "negate": True, "tag": "v1"}


def _graph() -> Graph:
    with Graph("custom", input_types=[_t("n", 4), _t("n", 4)]) as g:
        x, y = g.inputs
        total, prod = ops.custom("test.scaled_add", [x, y], PARAMS)
        g.output(total, prod)
    return g


def test_custom__prints_parameters_and_round_trips() -> None:
    text = str(_graph())
    assert 'symbol = "test.scaled_add"' in text
    assert 'parameters = {alpha = 3 : i64, negate = true, prod_dtype = #fg.dtype<bf16>, tag = "v1"}' in text
    reparsed = parse(text)
    assert str(reparsed) == text
    op = next(op for op in reparsed.block.ops if op.name == "fg.custom")
    assert op.parameter_values == PARAMS


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
def test_custom__runs_in_both_modes_against_the_math(mode: Literal["custom", "decomposed"]) -> None:
    gm = to_fx(_graph(), mode=mode)
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    total, prod = gm(x, y)
    torch.testing.assert_close(total, -(x + 3 * y))
    torch.testing.assert_close(prod, (x * y).to(torch.bfloat16))
    custom_call = "torch.ops.fusegraph_custom.test_scaled_add" in str(make_fx(gm)(x, y).code)
    assert custom_call == (mode == "custom")


def test_custom__runs_through_compile_at_two_sizes() -> None:
    model = fusegraph.compile(_graph(), backend="eager", device="cpu")
    for n in (1, 6):
        x, y = torch.randn(n, 4), torch.randn(n, 4)
        total, prod = model(x, y)
        torch.testing.assert_close(total, -(x + 3 * y))
        assert prod.dtype == torch.bfloat16 and prod.shape == (n, 4)


def test_custom__symbolic_trace_uses_the_fake_impl() -> None:
    traced = make_fx(to_fx(_graph()), tracing_mode="symbolic")(torch.randn(5, 4), torch.randn(5, 4))
    (out,) = [n for n in traced.graph.nodes if n.op == "output"]
    assert isinstance(out.args[0][0].meta["val"].shape[0], torch.SymInt)


def test_custom__opcheck_passes() -> None:
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    params = '{"alpha": 2, "negate": false, "prod_dtype": {"dtype": "f16"}, "tag": ""}'
    assert decode_parameters(params)["prod_dtype"] == DType.float16
    torch.library.opcheck(SPEC.library_op, ([x, y], params))


def test_custom__identity_impl_outputs_do_not_alias_inputs() -> None:
    spec = ops.register_custom_op("test.identity", lambda types, params: [types[0]], lambda x: x)
    x = torch.randn(3)
    (y,) = spec.library_op([x], "{}")
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    torch.library.opcheck(spec.library_op, ([x], "{}"))


def test_custom__unknown_symbol_lists_registered_ops() -> None:
    assert "test.scaled_add" in registered_custom_ops()
    with Graph("g", input_types=[_t(4)]) as g:
        (x,) = g.inputs
        with pytest.raises(
            ValueError,
            match=r"fg.custom: unknown symbol 'test.nope'; registered custom ops: .*test.scaled_add",
        ):
            ops.custom("test.nope", [x])
    text = str(_graph()).replace('"test.scaled_add"', '"test.nope"')
    with pytest.raises(IRVerifyError, match=r"unknown symbol 'test.nope'"):
        parse(text)


def test_custom__shape_rule_and_parameter_errors() -> None:
    with Graph("g", input_types=[_t("n", 4), _t("n", 5)]) as g:
        x, y = g.inputs
        with pytest.raises(
            ValueError, match=r"test.scaled_add: x shape \['n', '4'\] != y shape \['n', '5'\]"
        ):
            ops.custom("test.scaled_add", [x, y], PARAMS)
        with pytest.raises(
            ValueError,
            match=r"parameter 'alpha' = \[1\] has type list; allowed: bool, int, float, str, DType",
        ):
            ops.custom("test.scaled_add", [x, x], {**PARAMS, "alpha": [1]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"register_custom_op: name must be dotted identifiers"):
        ops.register_custom_op("bad name", _scaled_add_rule, _scaled_add_torch)
