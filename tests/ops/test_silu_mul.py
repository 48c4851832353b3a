"""`fg.silu_mul`: the shape rule's errors, and the torch implementation against the float64 math
`g * sigmoid(g) * u` (stacked and two-operand forms) and against the unfused `fg.silu` + `fg.mul`."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.ops.silu_mul import SiluMulOp, silu_mul_math

CPU = DeviceRef.CPU()
F16, F32 = DType.float16, DType.float32


def _t(*shape: int | str, dtype: DType = F16, device: DeviceRef = CPU) -> TensorType:
    return TensorType(dtype, list(shape), device)


def _reference(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    g64 = g.double()
    return g64 * torch.sigmoid(g64) * u.double()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_silu_mul__graph_equals_the_math_and_the_unfused_ops(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    gu = (torch.randn(5, 2 * 48, generator=gen) * 4).to(dtype)
    fg_dtype = {torch.float16: F16, torch.bfloat16: DType.bfloat16, torch.float32: F32}[dtype]
    with Graph("silu_mul", input_types=[_t("t", 96, dtype=fg_dtype)]) as g:
        (x,) = g.inputs
        a, b = ops.split(x, [48, 48], axis=1)
        g.output(ops.silu_mul(x), ops.silu_mul(a, b), ops.silu(a) * b)
    stacked, two, unfused = fusegraph.compile(g, pipeline=None)(gu)
    assert stacked.shape == (5, 48) and stacked.dtype == dtype
    assert torch.equal(stacked, two) and torch.equal(stacked, unfused)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(stacked.double(), _reference(gu[:, :48], gu[:, 48:]), rtol=tol, atol=tol)


def test_silu_mul_math__halves_gate_first() -> None:
    g, u = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]])
    got = silu_mul_math(torch.cat([g, u], dim=1), None)
    torch.testing.assert_close(got.double(), _reference(g, u))


@pytest.mark.parametrize(
    ("gate", "up", "message"),
    [
        (_t(4, 8, dtype=DType.int32), None, "fg.silu_mul: gate dtype must be a float type, got int32"),
        (_t(dtype=F16), None, "fg.silu_mul: gate must have rank >= 1, got a scalar"),
        (_t(4, 7), None, r"without up, gate dim -1 must be a static even 2I, got 7"),
        (_t(4, "n"), None, r"without up, gate dim -1 must be a static even 2I, got n"),
        (_t(4, 8), _t(4, 8, dtype=F32), r"up \[4, 8\] float32 must have gate's type \[4, 8\] float16"),
        (_t(4, 8), _t(1, 8), r"up \[1, 8\] float16 must have gate's type \[4, 8\] float16"),
        (
            _t(4, 8),
            _t(4, 8, device=DeviceRef.GPU(0)),
            "operands on different devices: gate on cpu, up on gpu:0",
        ),
        (_t(4, 8), 3, "up must be a !fg.tensor, got 3"),
    ],  # fmt: skip
)
def test_silu_mul__shape_rule_names_the_operand_and_dims(gate, up, message) -> None:
    with pytest.raises(ValueError, match=message):
        SiluMulOp.rule(gate, up)


def test_silu_mul__the_rule_halves_the_last_dim_or_keeps_the_type() -> None:
    assert SiluMulOp.rule(_t("t", 64)) == [_t("t", 32)]
    assert SiluMulOp.rule(_t("t", 7), _t("t", 7)) == [_t("t", 7)]
