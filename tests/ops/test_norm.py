"""fg.rms_norm and fg.softmax: shape rules (every error) and numerics vs the formulas."""

from __future__ import annotations

import math

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops

CPU = DeviceRef.CPU()
F32 = DType.float32


def _t(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def _rms_reference(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    rows = x.double().reshape(-1, x.shape[-1])
    out = torch.empty_like(rows)
    for r in range(rows.shape[0]):
        rms = math.sqrt(sum(v * v for v in rows[r].tolist()) / rows.shape[1] + eps)
        out[r] = rows[r] / rms * w.double()
    return out.reshape(x.shape)


@pytest.mark.parametrize(("dtype", "tol"), [(DType.float32, 1e-5), (DType.bfloat16, 2e-2)])
def test_rms_norm__matches_formula(dtype: DType, tol: float) -> None:
    with Graph("n", input_types=[_t("t", 3, 16, dtype=dtype)]) as g:
        (x,) = g.inputs
        w = g.add_weight("norm.weight", _t(16, dtype=dtype))
        g.output(ops.rms_norm(x, w, eps=1e-5))
    weight = torch.randn(16).to(dtype.to_torch())
    model = fusegraph.compile(g, weights={"norm.weight": weight})
    x = (torch.randn(5, 3, 16) * 3).to(dtype.to_torch())
    (y,) = model(x)
    assert y.dtype == dtype.to_torch()
    torch.testing.assert_close(y.double(), _rms_reference(x, weight, 1e-5), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("x_type", "w_type", "eps", "message"),
    [
        (_t("t", 16), _t(8), 1e-6, r"fg.rms_norm: weight dim 0 \(8\) != 16"),
        (_t("t", 16), _t(1, 16), 1e-6, r"fg.rms_norm: weight must have rank 1, got shape \[1, 16\]"),
        (
            _t("t", 16),
            _t(16, dtype=DType.float16),
            1e-6,
            r"fg.rms_norm: weight dtype float16 != input dtype float32",
        ),
        (
            _t("t", 16, dtype=DType.int32),
            _t(16, dtype=DType.int32),
            1e-6,
            r"input dtype must be a float type, got int32",
        ),
        (_t("t", 16), _t(16), -1.0, r"fg.rms_norm: eps must be >= 0, got eps=-1.0"),
    ],
)
def test_rms_norm__errors(x_type: TensorType, w_type: TensorType, eps: float, message: str) -> None:
    with Graph("n", input_types=[x_type, w_type]) as g:
        x, w = g.inputs
        with pytest.raises(ValueError, match=message):
            ops.rms_norm(x, w, eps)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax__matches_exp_over_sum(axis: int) -> None:
    with Graph("s", input_types=[_t("t", 6)]) as g:
        (x,) = g.inputs
        g.output(ops.softmax(x, axis=axis))
    x = torch.randn(4, 6) * 10
    (y,) = fusegraph.compile(g)(x)
    shifted = (x - x.amax(dim=axis, keepdim=True)).double().exp()
    torch.testing.assert_close(
        y.double(), shifted / shifted.sum(dim=axis, keepdim=True), rtol=1e-5, atol=1e-6
    )


def test_softmax__errors() -> None:
    with Graph("s", input_types=[_t(4, 6), _t(4, dtype=DType.int64)]) as g:
        x, i = g.inputs
        with pytest.raises(ValueError, match=r"fg.softmax: axis 2 out of range for rank 2 \(allowed -2..1\)"):
            ops.softmax(x, axis=2)
        with pytest.raises(ValueError, match=r"fg.softmax: input dtype must be a float type, got int64"):
            ops.softmax(i)
