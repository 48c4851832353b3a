"""The Triton silu_mul kernel (interpreted on the CPU) against the float64 math and the unfused aten ops:
the stacked [M, 2I] form read in place, two operands, strided rows, leading dims, a partial block,
empty inputs, and an eager ValueError for every mismatch."""

from __future__ import annotations

import pytest
import torch

from fusegraph.ops.silu_mul import silu_mul_math
from tests.kernels._interp import load_interpreted

kernel = load_interpreted("silu_mul", kernel_deps=("pdl",))


def _reference(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    g64 = g.double()
    return g64 * torch.sigmoid(g64) * u.double()


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3, 2 * 40), torch.float16), ((2, 2, 2 * 1100), torch.bfloat16), ((1, 2 * 5), torch.float32)],
)
@pytest.mark.parametrize("stacked", [True, False])
def test_silu_mul_rows__matches_the_math_and_the_unfused_ops(shape, dtype, stacked) -> None:
    gen = torch.Generator().manual_seed(shape[-1])
    gu = (torch.randn(*shape, generator=gen) * 4).to(dtype)
    g, u = gu.chunk(2, dim=-1)  # views with the stacked row stride: strided rows in the two-operand form
    y = kernel.silu_mul_rows(gu) if stacked else kernel.silu_mul_rows(g, u)
    assert y.shape == g.shape and y.dtype == dtype and y.is_contiguous()
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(y.double(), _reference(g, u), rtol=tol, atol=tol)
    # the unfused ops round twice, as the kernel does: within 2 ulps (exp's last bit can move silu's rounding)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y, silu_mul_math(g, u), rtol=2 * eps, atol=eps)


def test_silu_mul_rows__empty_rows_and_a_column_view() -> None:
    assert kernel.silu_mul_rows(torch.zeros(0, 8)).shape == (0, 4)
    x = torch.randn(8, 6)
    g, u = x[:, 0:1].expand(8, 3), x[:, 1:4]  # gate's columns have stride 0: made contiguous first
    torch.testing.assert_close(kernel.silu_mul_rows(g, u).double(), _reference(g, u))


@pytest.mark.parametrize(
    ("gate", "up", "message"),
    [
        (
            torch.zeros(2, 3, dtype=torch.int32),
            None,
            "fg.silu_mul: gate dtype must be float16, bfloat16 or float32",
        ),
        (torch.zeros(2, 5), None, "fg.silu_mul: without up, gate dim -1 must be even, got 5"),
        (
            torch.zeros(2, 4),
            torch.zeros(2, 3),
            r"fg.silu_mul: up \[2, 3\] torch.float32 on cpu must match gate",
        ),
        (torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.float16), "must match gate"),
        (torch.tensor(1.0), None, "fg.silu_mul: gate must have rank >= 1, got a scalar"),
    ],  # fmt: skip
)
def test_silu_mul_rows__a_mismatch_is_a_value_error(gate, up, message) -> None:
    with pytest.raises(ValueError, match=message):
        kernel.silu_mul_rows(gate, up)
