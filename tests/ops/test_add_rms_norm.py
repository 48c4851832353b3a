"""fg.add_rms_norm: shape rules (every error of its own; the norm's are fg.rms_norm's, named for this
op), the text form, and the torch implementation in each mode, the custom op and the eager runtime:
the sum bitwise as fg.add computes it, the normed rows against the float64 math of that sum."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.dialect import parse
from fusegraph.ops.add_rms_norm import AddRmsNormOp
from tests.ops.test_rms_norm_perm import ULPS, _Calls, assert_within_ulps, reference

CPU = DeviceRef.CPU()
F16, I32 = DType.float16, DType.int32


def _t(*shape: int | str, dtype: DType = F16) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def _graph(dtype: DType = F16, with_perm: bool = True) -> Graph:
    with Graph("n", input_types=[_t("t", 8, dtype=dtype), _t("t", 8, dtype=dtype)]) as g:
        x, r = g.inputs
        w = g.add_weight("norm.weight", _t(8, dtype=dtype))
        perm = g.add_weight("norm.perm", _t(8, dtype=I32)) if with_perm else None
        g.output(*ops.add_rms_norm(x, r, w, 1e-5, perm))
    return g


def test_add_rms_norm__builder_gives_the_sum_and_the_normed_rows() -> None:
    g = _graph()
    (op,) = [o for o in g.block.ops if isinstance(o, AddRmsNormOp)]
    assert op.residual.type == op.result.type == _t("t", 8) and op.perm is not None
    text = str(g)
    assert "%4, %5 = fg.add_rms_norm %0, %1, %2 perm %3 {eps = 1.000000e-05 : f64}" in text
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    ("rhs", "weight", "perm", "message"),
    [
        (
            _t("t", 8, dtype=DType.float32),
            _t(8),
            None,
            r"rhs type .* != lhs type .* \(the add does not broadcast\)",
        ),
        (_t(8), _t(8), None, r"rhs type !fg.tensor<\[8\], f16, cpu> != lhs type"),
        (_t("t", 8), _t(4), None, r"weight dim 0 \(4\) != 8"),
        (_t("t", 8), _t(8, dtype=DType.float32), None, "weight dtype float32 != lhs dtype float16"),
        (_t("t", 8), _t(8), _t(8, dtype=DType.int64), "perm dtype must be one of int32, got int64"),
    ],
)
def test_add_rms_norm__errors(
    rhs: TensorType, weight: TensorType, perm: TensorType | None, message: str
) -> None:
    types = [_t("t", 8), rhs, weight] + ([perm] if perm is not None else [])
    with Graph("n", input_types=types) as g:
        x, r, w, *p = g.inputs
        with pytest.raises(ValueError, match=f"^fg.add_rms_norm: {message}"):
            ops.add_rms_norm(x, r, w, 1e-6, p[0] if p else None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("mode", "device"), [("custom", "cpu"), ("decomposed", "cpu"), ("custom", "cuda")])
def test_add_rms_norm__impl_sum_is_the_add_and_rows_match_the_math(
    mode: str, device: str, dtype: torch.dtype
) -> None:
    op = next(o for o in _graph(DType.from_torch(dtype)).block.ops if isinstance(o, AddRmsNormOp))
    gen = torch.Generator().manual_seed(1)
    x, r = ((torch.randn(5, 8, generator=gen) * 3).to(dtype) for _ in range(2))
    w, perm = (torch.rand(8, generator=gen) + 0.5).to(dtype), torch.randperm(8, generator=gen).to(torch.int32)
    for p in (perm, None):
        with _Calls() as calls:
            s, y = get_torch_impl(op)(op, x, r, w, p, ctx=LoweringContext(mode=mode, device=device))  # type: ignore[arg-type]
        assert ("fusegraph.add_rms_norm.default" in calls.names) == (device == "cuda")
        assert torch.equal(s, x + r)
        assert_within_ulps(y, reference(x + r, w, 1e-5, p), ULPS[dtype])


def test_add_rms_norm_custom_op__opcheck_and_perm_check() -> None:
    x, r, w = (
        torch.randn(3, 16, dtype=torch.float16),
        torch.randn(3, 16, dtype=torch.float16),
        torch.ones(16).half(),
    )
    perm = torch.randperm(16).to(torch.int32)
    for p in (perm, None):
        torch.library.opcheck(torch.ops.fusegraph.add_rms_norm.default, (x, r, w, p, 1e-6))
    bad = perm.clone()
    bad[0] = 16
    with pytest.raises(
        ValueError, match=r"^fg.rms_norm: perm must be a permutation of 0..15, got perm\[0\] = 16"
    ):
        torch.ops.fusegraph.add_rms_norm(x, r, w, bad, 1e-6)


def test_add_rms_norm__eager_runtime_matches_the_math() -> None:
    gen = torch.Generator().manual_seed(4)
    x, r = ((torch.randn(6, 8, generator=gen) * 2).half() for _ in range(2))
    w, perm = (torch.rand(8, generator=gen) + 0.5).half(), torch.randperm(8, generator=gen).to(torch.int32)
    s, y = fusegraph.compile(_graph(), weights={"norm.weight": w, "norm.perm": perm})(x, r)
    assert torch.equal(s, x + r)
    assert_within_ulps(y, reference(x + r, w, 1e-5, perm), 1.0)


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
def test_add_rms_norm__lowers_to_aten(mode: str) -> None:
    pytest.importorskip("torch_mlir")
    from fusegraph.compiler.lowering import to_torch_mlir

    text = str(to_torch_mlir(_graph(), mode=mode))  # type: ignore[arg-type]
    assert "torch.operator" not in text and "torch.aten.add.Tensor" in text
    assert text.count("torch.aten.index_select") == 1 and "torch.aten.rsqrt" in text
