"""fg.rms_norm's optional `perm` operand: shape rules (every error), the text form, the torch
implementation in each mode and the `fusegraph::rms_norm` custom op, the eager runtime and the
torch-mlir lowering, all against the float64 math `y[..., j] = norm(x)[..., perm[j]]`."""

from __future__ import annotations

import gc

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fusegraph
import fusegraph.ops.norm as norm_module
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.errors import IRVerifyError
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.dialect import parse
from fusegraph.ops.norm import RmsNormOp

CPU = DeviceRef.CPU()
F32, I32 = DType.float32, DType.int32
MANTISSA = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23}


def _t(*shape: int | str, dtype: DType = F32, device: DeviceRef = CPU) -> TensorType:
    return TensorType(dtype, list(shape), device)


def reference(x: torch.Tensor, w: torch.Tensor, eps: float, perm: torch.Tensor | None = None) -> torch.Tensor:
    """The math in float64: `(x / sqrt(mean(x**2, -1) + eps) * w)[..., perm]`."""
    xd = x.double()
    y = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * w.double()
    return y if perm is None else y[..., perm.long()]


def assert_within_ulps(y: torch.Tensor, want: torch.Tensor, ulps: float) -> None:
    """|y - want| <= ulps units in the last place of y's dtype at want (want in float64)."""
    _, exp = torch.frexp(want.abs().clamp_min(torch.finfo(y.dtype).tiny))
    spacing = torch.ldexp(torch.ones_like(want), exp - 1 - MANTISSA[y.dtype])
    err = ((y.double() - want).abs() / spacing).max().item()
    assert err <= ulps, f"{y.dtype}: {err:.2f} ulps from the float64 math (allowed {ulps})"


# fp16/bf16: the float32 math rounded once (<= 1 ulp); fp32: a few roundings of the float32 math.
ULPS = {torch.float16: 1.0, torch.bfloat16: 1.0, torch.float32: 4.0}


def _graph(d: int | str = 8, dtype: DType = F32, perm_dim: int | str | None = None) -> Graph:
    with Graph("n", input_types=[_t("t", 3, d, dtype=dtype)]) as g:
        (x,) = g.inputs
        w = g.add_weight("norm.weight", _t(d, dtype=dtype))
        perm = g.add_weight("norm.perm", _t(d if perm_dim is None else perm_dim, dtype=I32))
        g.output(ops.rms_norm(x, w, 1e-5, perm))
    return g


def test_rms_norm_perm__builder_adds_the_operand_and_keeps_the_type() -> None:
    g = _graph(8, DType.float16)
    (op,) = [o for o in g.block.ops if isinstance(o, RmsNormOp)]
    assert op.perm is not None and op.perm.type == _t(8, dtype=I32)
    assert op.result.type == _t("t", 3, 8, dtype=DType.float16)
    assert "fg.rms_norm %0, %1 perm %2 {eps = 1.000000e-05 : f64}" in str(g)


@pytest.mark.parametrize(
    ("x_type", "perm_type", "message"),
    [
        (_t("t", 8), _t(8), r"fg.rms_norm: perm dtype must be one of int32, got float32"),
        (_t("t", 8), _t(2, 8, dtype=I32), r"fg.rms_norm: perm must have rank 1, got shape \[2, 8\]"),
        (_t("t", 8), _t(4, dtype=I32), r"fg.rms_norm: perm dim 0 \(4\) != 8"),
        (_t("t", "d"), _t("d", dtype=I32), r"fg.rms_norm: perm needs a static input dim -1, got d"),
        (
            _t("t", 8),
            _t(8, dtype=I32, device=DeviceRef.GPU(0)),
            r"fg.rms_norm: operands on different devices",
        ),
    ],
)
def test_rms_norm_perm__errors(x_type: TensorType, perm_type: TensorType, message: str) -> None:
    w_type = TensorType(F32, [x_type.shape[-1]], CPU)
    with Graph("n", input_types=[x_type, w_type, perm_type]) as g:
        x, w, perm = g.inputs
        with pytest.raises(ValueError, match=message):
            ops.rms_norm(x, w, 1e-6, perm)


def test_rms_norm_perm__round_trips_and_parsed_ir_is_verified() -> None:
    text = str(_graph())
    assert str(parse(text)) == text
    bad = text.replace("!fg.tensor<[8], i32, cpu>", "!fg.tensor<[6], i32, cpu>")
    with pytest.raises(IRVerifyError, match=r"fg.rms_norm: perm dim 0 \(6\) != 8"):
        parse(bad)


def test_rms_norm__ir_without_perm_parses_as_before() -> None:
    text = """builtin.module {
  func.func @n(%0: !fg.tensor<[t, 8], f32, cpu>, %1: !fg.tensor<[8], f32, cpu>) -> !fg.tensor<[t, 8], f32, cpu> {
    %2 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f32, cpu>, !fg.tensor<[8], f32, cpu> -> !fg.tensor<[t, 8], f32, cpu>
    func.return %2 : !fg.tensor<[t, 8], f32, cpu>
  }
}
"""  # noqa: E501
    graph = parse(text)
    (op,) = [o for o in graph.block.ops if isinstance(o, RmsNormOp)]
    assert op.perm is None
    assert str(graph) == text
    x, w = torch.randn(5, 8), torch.randn(8)
    (y,) = fusegraph.compile(graph)(x, w)
    assert_within_ulps(y, reference(x, w, 1e-5), ULPS[torch.float32])


def _operands(
    dtype: torch.dtype, d: int = 24, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, 3, d, generator=gen) * 4).to(dtype)
    w = (torch.rand(d, generator=gen) + 0.5).to(dtype)
    return x, w, torch.randperm(d, generator=gen).to(torch.int32)


class _Calls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("mode", "device", "calls_custom_op"),
    [
        ("custom", "cpu", False),
        ("decomposed", "cpu", False),
        ("custom", "cuda", True),
        ("decomposed", "cuda", False),
    ],
)
def test_rms_norm_perm__impl_matches_the_math(
    mode: str, device: str, calls_custom_op: bool, dtype: torch.dtype
) -> None:
    op = next(o for o in _graph(24, DType.from_torch(dtype)).block.ops if isinstance(o, RmsNormOp))
    x, w, perm = _operands(dtype)
    ctx = LoweringContext(mode=mode, device=device)  # type: ignore[arg-type]
    for p in (perm, None):
        with _Calls() as calls:
            y = get_torch_impl(op)(op, x, w, p, ctx=ctx)
        assert ("fusegraph.rms_norm.default" in calls.names) == calls_custom_op, calls.names
        assert y.dtype == dtype and y.shape == x.shape
        assert_within_ulps(y, reference(x, w, 1e-5, p), ULPS[dtype])


def test_rms_norm_custom_op__passes_opcheck_with_and_without_perm() -> None:
    x, w, perm = _operands(torch.float16, d=16)
    for p in (perm, None):
        torch.library.opcheck(torch.ops.fusegraph.rms_norm.default, (x, w, p, 1e-6))
        assert_within_ulps(torch.ops.fusegraph.rms_norm(x, w, p, 1e-6), reference(x, w, 1e-6, p), 1.0)


def test_rms_norm_perm__eager_runtime_matches_the_math() -> None:
    x, w, perm = _operands(torch.bfloat16, d=8, seed=3)
    model = fusegraph.compile(_graph(8, DType.bfloat16), weights={"norm.weight": w, "norm.perm": perm})
    (y,) = model(x)
    assert_within_ulps(y, reference(x, w, 1e-5, perm), ULPS[torch.bfloat16])


@pytest.mark.parametrize("mode", ["custom", "decomposed"])
def test_rms_norm_perm__lowers_to_aten_with_an_index_select(mode: str) -> None:
    pytest.importorskip("torch_mlir")
    from fusegraph.compiler.lowering import to_torch_mlir

    module = to_torch_mlir(_graph(8, DType.float16), mode=mode)  # type: ignore[arg-type]
    text = str(module)
    assert "torch.operator" not in text  # aten only: IREE and the backends compile it
    assert text.count("torch.aten.index_select") == 1 and "torch.aten.rsqrt" in text
    assert "!torch.vtensor<[?,3,8],f16>" in text  # the symbolic dim stays dynamic
    x, w, perm = _operands(torch.float16, d=8, seed=5)
    x = x.reshape(2, 3, 8)
    if mode == "custom":
        assert module.fx_module.meta["fusegraph_lowering"] == "direct"  # derived op by op, no fallback
    (y,) = module.fx_module(x, w, perm)[:1]
    assert_within_ulps(y, reference(x, w, 1e-5, perm), 1.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([3, 0, 1, 8], r"perm must be a permutation of 0..3, got perm\[3\] = 8"),
        ([3, 0, -1, 2], r"perm must be a permutation of 0..3, got perm\[2\] = -1"),
        ([3, 0, 3, 2], r"perm must be a permutation of 0..3, got perm\[0\] = perm\[2\] = 3"),
    ],
)
def test_rms_norm_perm__a_non_permutation_raises_in_every_path(values: list[int], message: str) -> None:
    x, w, _ = _operands(torch.float32, d=4)
    perm = torch.tensor(values, dtype=torch.int32)
    op = next(o for o in _graph(4).block.ops if isinstance(o, RmsNormOp))
    for ctx in (LoweringContext(mode="custom", device="cuda"), LoweringContext(mode="decomposed")):
        with pytest.raises(ValueError, match=f"^fg.rms_norm: {message}$"):
            get_torch_impl(op)(op, x, w, perm, ctx=ctx)
    with pytest.raises(ValueError, match=message):
        torch.ops.fusegraph.rms_norm(x, w, perm, 1e-6)
    with pytest.raises(ValueError, match=f"^weight 'norm.perm': fg.rms_norm: {message}$"):  # when bound
        fusegraph.compile(_graph(4), weights={"norm.weight": w, "norm.perm": perm})


def test_rms_norm_perm__is_checked_again_after_it_is_written() -> None:
    x, w, perm = _operands(torch.float32, d=4)
    assert_within_ulps(torch.ops.fusegraph.rms_norm(x, w, perm, 1e-6), reference(x, w, 1e-6, perm), 4.0)
    perm[1] = 7  # in place: the tensor's version moves, so the cached check no longer holds
    with pytest.raises(ValueError, match=r"got perm\[1\] = 7"):
        torch.ops.fusegraph.rms_norm(x, w, perm, 1e-6)
    key = id(perm)
    del perm
    gc.collect()
    assert key not in norm_module._PERM_CHECKED  # a freed perm's entry goes with it


def test_perm_checked__only_for_the_values_check_perm_read() -> None:
    perm = torch.tensor([2, 0, 1], dtype=torch.int32)
    assert not norm_module.perm_checked(perm)
    norm_module.check_perm(perm, 3)
    assert norm_module.perm_checked(perm)
    perm[1] = 2  # written after the check (a duplicate now): no longer vouched for
    assert not norm_module.perm_checked(perm)
    with pytest.raises(ValueError, match=r"perm\[0\] = perm\[1\] = 2"):
        norm_module.check_perm(perm.clone(), 3)
