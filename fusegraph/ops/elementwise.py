"""Elementwise ops: constant, add/sub/mul/div (numpy broadcasting), neg, exp, rsqrt, silu,
relu, cast, clamp.

Example:
    >>> y = ops.silu(x) * (x + 1.0)          # scalars become fg.constant
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler._legacy_emit import emit
from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.impls import LoweringContext, fx_emitter, torch_impl
from fusegraph.compiler.opbase import FgOp, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import broadcast_shapes, expect_same_device, expect_tensor

_FORMAT_UNARY = "$input attr-dict `:` type($input) `->` type($result)"
_FORMAT_BINARY = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)"


# --- constant -------------------------------------------------------------------------
@register_op
@irdl_op_definition
class ConstantOp(FgOp):
    """`%c = fg.constant {value = 1.0 : f64} : !fg.tensor<[], f32, cpu>`: a scalar (rank-0) constant."""

    name = "fg.constant"
    value = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($result)"

    def infer_types(self) -> Sequence[Attribute]:
        t = expect_tensor(self.name, "result", self.result.type)
        if t.rank != 0:
            raise ValueError(f"fg.constant: result must be rank 0, got rank {t.rank}")
        return [t]


def constant(value: float, dtype: DType, device: DeviceRef | None = None) -> TensorValue:
    """A rank-0 constant of `dtype`."""
    rt = TensorType(dtype, [], device or DeviceRef.CPU())
    op = emit(ConstantOp, [], {"value": FloatAttr(float(value), Float64Type())}, result_types=[rt])
    return TensorValue(op.results[0])


@torch_impl(ConstantOp)
def _constant_torch(op: ConstantOp, *, ctx: LoweringContext) -> torch.Tensor:
    t = op.result.type
    return torch.tensor(op.value.value.data, dtype=t.dtype.to_torch(), device=ctx.device)


# --- binary ---------------------------------------------------------------------------
class BinaryElementwiseOp(FgOp):
    """Base of the broadcasting binary ops."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _FORMAT_BINARY

    def infer_types(self) -> Sequence[Attribute]:
        return [_binary_shape_rule(self.name, self.lhs.type, self.rhs.type)]


def _binary_shape_rule(op: str, lhs: Any, rhs: Any) -> TensorType:
    lhs = expect_tensor(op, "lhs", lhs)
    rhs = expect_tensor(op, "rhs", rhs)
    expect_same_device(op, lhs=lhs, rhs=rhs)
    if lhs.dtype != rhs.dtype:
        raise ValueError(f"{op}: lhs dtype {lhs.dtype.name} != rhs dtype {rhs.dtype.name}")
    return TensorType(lhs.dtype, broadcast_shapes(op, lhs.shape, rhs.shape), lhs.device)


def _make_binary(cls_name: str, op_name: str, symbol: str, fn: Any) -> type[BinaryElementwiseOp]:
    doc = f"`{op_name}`: lhs {symbol} rhs, with numpy broadcasting."
    cls = type(cls_name, (BinaryElementwiseOp,), {"name": op_name, "__doc__": doc})
    cls = register_op(irdl_op_definition(cls))
    torch_impl(cls)(lambda op, lhs, rhs, *, ctx: fn(lhs, rhs))
    return cls


AddOp = _make_binary("AddOp", "fg.add", "+", torch.add)
SubOp = _make_binary("SubOp", "fg.sub", "-", torch.sub)
MulOp = _make_binary("MulOp", "fg.mul", "*", torch.mul)
DivOp = _make_binary("DivOp", "fg.div", "/", torch.div)


def _binary(op_cls: type[BinaryElementwiseOp], lhs: Any, rhs: Any) -> TensorValue:
    if not isinstance(lhs, TensorValue) and not isinstance(rhs, TensorValue):
        raise TypeError(f"{op_cls.name}: at least one operand must be a TensorValue")
    if not isinstance(lhs, TensorValue):
        lhs = constant(lhs, rhs.dtype, rhs.device)
    if not isinstance(rhs, TensorValue):
        rhs = constant(rhs, lhs.dtype, lhs.device)
    op = emit(op_cls, [lhs, rhs], result_types=lambda: [_binary_shape_rule(op_cls.name, lhs.type, rhs.type)])
    return TensorValue(op.results[0])


def add(lhs: TensorValue | float, rhs: TensorValue | float) -> TensorValue:
    """Elementwise `lhs + rhs` with numpy broadcasting; a Python scalar becomes a constant."""
    return _binary(AddOp, lhs, rhs)


def sub(lhs: TensorValue | float, rhs: TensorValue | float) -> TensorValue:
    """Elementwise `lhs - rhs` with numpy broadcasting."""
    return _binary(SubOp, lhs, rhs)


def mul(lhs: TensorValue | float, rhs: TensorValue | float) -> TensorValue:
    """Elementwise `lhs * rhs` with numpy broadcasting."""
    return _binary(MulOp, lhs, rhs)


def div(lhs: TensorValue | float, rhs: TensorValue | float) -> TensorValue:
    """Elementwise `lhs / rhs` with numpy broadcasting."""
    return _binary(DivOp, lhs, rhs)


# --- unary ----------------------------------------------------------------------------
class UnaryElementwiseOp(FgOp):
    """Base of the unary ops: the result has the input's type."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _FORMAT_UNARY

    def infer_types(self) -> Sequence[Attribute]:
        t = expect_tensor(self.name, "input", self.input.type)
        if not t.dtype.is_float and self.name in _FLOAT_ONLY:
            raise ValueError(f"{self.name}: input dtype must be a float type, got {t.dtype.name}")
        return [t]


_FLOAT_ONLY = {"fg.exp", "fg.rsqrt", "fg.silu"}


def _make_unary(cls_name: str, op_name: str, fn: Any) -> type[UnaryElementwiseOp]:
    cls = type(cls_name, (UnaryElementwiseOp,), {"name": op_name, "__doc__": f"`{op_name}`, elementwise."})
    cls = register_op(irdl_op_definition(cls))
    torch_impl(cls)(lambda op, x, *, ctx: fn(x))
    return cls


NegOp = _make_unary("NegOp", "fg.neg", torch.neg)
ExpOp = _make_unary("ExpOp", "fg.exp", torch.exp)
RsqrtOp = _make_unary("RsqrtOp", "fg.rsqrt", torch.rsqrt)
SiluOp = _make_unary("SiluOp", "fg.silu", torch.nn.functional.silu)
ReluOp = _make_unary("ReluOp", "fg.relu", torch.relu)


def _unary(op_cls: type[UnaryElementwiseOp], x: TensorValue) -> TensorValue:
    op = emit(op_cls, [x], result_types=lambda: [_unary_rule(op_cls.name, x.type)])
    return TensorValue(op.results[0])


def _unary_rule(op: str, t: Any) -> TensorType:
    t = expect_tensor(op, "input", t)
    if op in _FLOAT_ONLY and not t.dtype.is_float:
        raise ValueError(f"{op}: input dtype must be a float type, got {t.dtype.name}")
    return t


def neg(x: TensorValue) -> TensorValue:
    """Elementwise `-x`."""
    return _unary(NegOp, x)


def exp(x: TensorValue) -> TensorValue:
    """Elementwise `e**x` (float types)."""
    return _unary(ExpOp, x)


def rsqrt(x: TensorValue) -> TensorValue:
    """Elementwise `1/sqrt(x)` (float types)."""
    return _unary(RsqrtOp, x)


def silu(x: TensorValue) -> TensorValue:
    """Elementwise `x * sigmoid(x)` (float types)."""
    return _unary(SiluOp, x)


def relu(x: TensorValue) -> TensorValue:
    """Elementwise `max(x, 0)`."""
    return _unary(ReluOp, x)


# --- cast and clamp -------------------------------------------------------------------
@register_op
@irdl_op_definition
class CastOp(FgOp):
    """`fg.cast`: convert the element type; the target dtype is the result type's."""

    name = "fg.cast"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _FORMAT_UNARY

    def infer_types(self) -> Sequence[Attribute]:
        t = expect_tensor(self.name, "input", self.input.type)
        r = expect_tensor(self.name, "result", self.result.type)
        return [TensorType(r.dtype, t.shape, t.device)]


def cast(x: TensorValue, dtype: DType) -> TensorValue:
    """Convert `x` to `dtype`.

    Example:
        >>> y = ops.cast(x, DType.bfloat16)
    """
    if not isinstance(dtype, DType):
        raise ValueError(f"fg.cast: dtype must be a DType, got {dtype!r}")
    op = emit(CastOp, [x], result_types=[TensorType(dtype, x.shape, x.device)])
    return TensorValue(op.results[0])


@torch_impl(CastOp)
def _cast_torch(op: CastOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    return x.to(op.result.type.dtype.to_torch())


@register_op
@irdl_op_definition
class ClampOp(FgOp):
    """`fg.clamp {min = -1.0, max = 1.0}`: clamp to `[min, max]`; either bound may be absent."""

    name = "fg.clamp"
    input = operand_def(TensorType)
    min = opt_prop_def(FloatAttr)
    max = opt_prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _FORMAT_UNARY

    def infer_types(self) -> Sequence[Attribute]:
        t = expect_tensor(self.name, "input", self.input.type)
        lo, hi = _bound(self.min), _bound(self.max)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"fg.clamp: min ({lo}) > max ({hi})")
        return [t]


def _bound(attr: FloatAttr | None) -> float | None:
    return None if attr is None else attr.value.data


def clamp(x: TensorValue, min: float | None = None, max: float | None = None) -> TensorValue:
    """Clamp `x` to `[min, max]`. At least one bound is required."""
    if min is None and max is None:
        raise ValueError("fg.clamp: give min, max or both")
    props = {k: FloatAttr(float(v), Float64Type()) for k, v in (("min", min), ("max", max)) if v is not None}

    def rule() -> list[TensorType]:
        if min is not None and max is not None and min > max:
            raise ValueError(f"fg.clamp: min ({min}) > max ({max})")
        return [expect_tensor("fg.clamp", "input", x.type)]

    op = emit(ClampOp, [x], props, result_types=rule)
    return TensorValue(op.results[0])


@torch_impl(ClampOp)
def _clamp_torch(op: ClampOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    return torch.clamp(x, _bound(op.min), _bound(op.max))


# --- direct FX emission (`lowering/fx_direct.py`): what make_fx records for the impls ---
_aten = torch.ops.aten


@fx_emitter(ConstantOp)
def _constant_fx(e: Any, op: ConstantOp) -> Any:
    return e.constant(torch.tensor(op.value.value.data, dtype=op.result.type.dtype.to_torch()))


def _emit_with(target: Any) -> Any:
    # The result is a new contiguous tensor of the op's IR type: no fake dispatch needed.
    return lambda e, op, *xs: e.call_fresh(target, *xs, sizes=_sizes(e, op), dtype=_dtype(op))


def _sizes(e: Any, op: Any) -> list[Any]:
    return list(e.fresh(op.result.type).shape)


def _dtype(op: Any) -> torch.dtype:
    return op.result.type.dtype.to_torch()


for _cls, _target in (
    (AddOp, _aten.add.Tensor),
    (SubOp, _aten.sub.Tensor),
    (MulOp, _aten.mul.Tensor),
    (DivOp, _aten.div.Tensor),
    (NegOp, _aten.neg.default),
    (ExpOp, _aten.exp.default),
    (RsqrtOp, _aten.rsqrt.default),
    (ReluOp, _aten.relu.default),
):
    fx_emitter(_cls)(_emit_with(_target))


@fx_emitter(SiluOp)
def _silu_fx(e: Any, op: Any, x: Any) -> Any:
    sizes, dtype = _sizes(e, op), _dtype(op)
    sigmoid = e.call_fresh(_aten.sigmoid.default, x, sizes=sizes, dtype=dtype)
    return e.call_fresh(_aten.mul.Tensor, x, sigmoid, sizes=sizes, dtype=dtype)


@fx_emitter(CastOp)
def _cast_fx(e: Any, op: CastOp, x: Any) -> Any:
    return e.convert(x, op.result.type.dtype.to_torch())


@fx_emitter(ClampOp)
def _clamp_fx(e: Any, op: ClampOp, x: Any) -> Any:
    return e.call(_aten.clamp.default, x, _bound(op.min), _bound(op.max))
