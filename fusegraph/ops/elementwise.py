"""Elementwise ops: constant, add/sub/mul/div (numpy broadcasting), neg, exp, rsqrt, silu,
relu, cast, clamp.

Example:
    >>> y = ops.silu(x) * (x + 1.0)          # scalars become fg.constant
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorOrScalar, TensorValue
from fusegraph.ops._common import broadcast_shapes, expect_same_device, expect_tensor

_FORMAT_UNARY = "$input attr-dict `:` type($input) `->` type($result)"
_FORMAT_BINARY = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)"
_TorchFn = Callable[..., torch.Tensor]


def _f64(value: float) -> FloatAttr:
    return FloatAttr(float(value), Float64Type())


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

    def __init__(self, value: float, *, dtype: DType, device: DeviceRef) -> None:
        super().__init__([], {"value": _f64(value)}, rule=partial(self.rule, dtype=dtype, device=device))

    def infer_types(self) -> Sequence[Attribute]:
        t = expect_tensor(self.name, "result", self.result.type)
        if t.rank != 0:
            raise ValueError(f"fg.constant: result must be rank 0, got rank {t.rank}")
        return self.rule(dtype=t.dtype, device=t.device)

    @staticmethod
    def rule(*, dtype: DType, device: DeviceRef) -> list[Attribute]:
        """The shape rule: a rank-0 tensor of `dtype` on `device`."""
        return [TensorType(dtype, [], device)]


def constant(value: float, dtype: DType, device: DeviceRef | None = None) -> TensorValue:
    """A rank-0 constant of `dtype`."""
    return emit_tensor(ConstantOp(value, dtype=dtype, device=device or DeviceRef.CPU()))


@torch_impl(ConstantOp)
def _constant_torch(op: ConstantOp, *, ctx: LoweringContext) -> torch.Tensor:
    t = op.result.type
    return torch.tensor(op.value.value.data, dtype=t.dtype.to_torch(), device=ctx.device)


# --- binary ---------------------------------------------------------------------------
class BinaryElementwiseOp(FgOp):
    """Base of the broadcasting binary ops: `AddOp(lhs, rhs)`."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _FORMAT_BINARY

    def __init__(self, lhs: Operand, rhs: Operand) -> None:
        super().__init__([lhs, rhs], rule=partial(self.rule, name=self.name))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.lhs.type, self.rhs.type, name=self.name)

    @staticmethod
    def rule(lhs: Attribute, rhs: Attribute, *, name: str) -> list[Attribute]:
        """The shape rule of op `name`: equal dtypes and devices, numpy-broadcast shapes."""
        lhs = expect_tensor(name, "lhs", lhs)
        rhs = expect_tensor(name, "rhs", rhs)
        expect_same_device(name, lhs=lhs, rhs=rhs)
        if lhs.dtype != rhs.dtype:
            raise ValueError(f"{name}: lhs dtype {lhs.dtype.name} != rhs dtype {rhs.dtype.name}")
        return [TensorType(lhs.dtype, broadcast_shapes(name, lhs.shape, rhs.shape), lhs.device)]


@register_op
@irdl_op_definition
class AddOp(BinaryElementwiseOp):
    """`fg.add`: lhs + rhs, with numpy broadcasting."""

    name = "fg.add"


@register_op
@irdl_op_definition
class SubOp(BinaryElementwiseOp):
    """`fg.sub`: lhs - rhs, with numpy broadcasting."""

    name = "fg.sub"


@register_op
@irdl_op_definition
class MulOp(BinaryElementwiseOp):
    """`fg.mul`: lhs * rhs, with numpy broadcasting."""

    name = "fg.mul"


@register_op
@irdl_op_definition
class DivOp(BinaryElementwiseOp):
    """`fg.div`: lhs / rhs, with numpy broadcasting."""

    name = "fg.div"


def _binary(op_cls: type[BinaryElementwiseOp], lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue:
    if isinstance(lhs, TensorValue) and not isinstance(rhs, TensorValue):
        rhs = constant(rhs, lhs.dtype, lhs.device)
    elif isinstance(rhs, TensorValue) and not isinstance(lhs, TensorValue):
        lhs = constant(lhs, rhs.dtype, rhs.device)
    if not isinstance(lhs, TensorValue) or not isinstance(rhs, TensorValue):
        raise TypeError(f"{op_cls.name}: at least one operand must be a TensorValue")
    return emit_tensor(op_cls(lhs, rhs))


def add(lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue:
    """Elementwise `lhs + rhs` with numpy broadcasting; a Python scalar becomes a constant."""
    return _binary(AddOp, lhs, rhs)


def sub(lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue:
    """Elementwise `lhs - rhs` with numpy broadcasting."""
    return _binary(SubOp, lhs, rhs)


def mul(lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue:
    """Elementwise `lhs * rhs` with numpy broadcasting."""
    return _binary(MulOp, lhs, rhs)


def div(lhs: TensorOrScalar, rhs: TensorOrScalar) -> TensorValue:
    """Elementwise `lhs / rhs` with numpy broadcasting."""
    return _binary(DivOp, lhs, rhs)


# --- unary ----------------------------------------------------------------------------
_FLOAT_ONLY = {"fg.exp", "fg.rsqrt", "fg.silu"}


class UnaryElementwiseOp(FgOp):
    """Base of the unary ops: `ExpOp(x)`; the result has the input's type."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _FORMAT_UNARY

    def __init__(self, input: Operand) -> None:
        super().__init__([input], rule=partial(self.rule, name=self.name))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, name=self.name)

    @staticmethod
    def rule(x: Attribute, *, name: str) -> list[Attribute]:
        """The shape rule of op `name`: `x` keeps its type (a float type for exp, rsqrt, silu)."""
        x = expect_tensor(name, "input", x)
        if not x.dtype.is_float and name in _FLOAT_ONLY:
            raise ValueError(f"{name}: input dtype must be a float type, got {x.dtype.name}")
        return [x]


@register_op
@irdl_op_definition
class NegOp(UnaryElementwiseOp):
    """`fg.neg`: -x."""

    name = "fg.neg"


@register_op
@irdl_op_definition
class ExpOp(UnaryElementwiseOp):
    """`fg.exp`: e**x (float types)."""

    name = "fg.exp"


@register_op
@irdl_op_definition
class RsqrtOp(UnaryElementwiseOp):
    """`fg.rsqrt`: 1/sqrt(x) (float types)."""

    name = "fg.rsqrt"


@register_op
@irdl_op_definition
class SiluOp(UnaryElementwiseOp):
    """`fg.silu`: x * sigmoid(x) (float types)."""

    name = "fg.silu"


@register_op
@irdl_op_definition
class ReluOp(UnaryElementwiseOp):
    """`fg.relu`: max(x, 0)."""

    name = "fg.relu"


def _impl_of(fn: _TorchFn) -> Callable[..., torch.Tensor]:
    """The torch implementation of an elementwise op: `fn` of its operand tensors."""
    return lambda op, *xs, ctx: fn(*xs)


for _cls, _fn in (
    (AddOp, torch.add),
    (SubOp, torch.sub),
    (MulOp, torch.mul),
    (DivOp, torch.div),
    (NegOp, torch.neg),
    (ExpOp, torch.exp),
    (RsqrtOp, torch.rsqrt),
    (SiluOp, torch.nn.functional.silu),
    (ReluOp, torch.relu),
):
    torch_impl(_cls)(_impl_of(_fn))


def neg(x: TensorValue) -> TensorValue:
    """Elementwise `-x`."""
    return emit_tensor(NegOp(x))


def exp(x: TensorValue) -> TensorValue:
    """Elementwise `e**x` (float types)."""
    return emit_tensor(ExpOp(x))


def rsqrt(x: TensorValue) -> TensorValue:
    """Elementwise `1/sqrt(x)` (float types)."""
    return emit_tensor(RsqrtOp(x))


def silu(x: TensorValue) -> TensorValue:
    """Elementwise `x * sigmoid(x)` (float types)."""
    return emit_tensor(SiluOp(x))


def relu(x: TensorValue) -> TensorValue:
    """Elementwise `max(x, 0)`."""
    return emit_tensor(ReluOp(x))


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

    def __init__(self, input: Operand, *, dtype: DType) -> None:
        super().__init__([input], rule=partial(self.rule, dtype=dtype))

    def infer_types(self) -> Sequence[Attribute]:
        r = expect_tensor(self.name, "result", self.result.type)
        return self.rule(self.input.type, dtype=r.dtype)

    @staticmethod
    def rule(x: Attribute, *, dtype: DType) -> list[Attribute]:
        """The shape rule: `x`'s shape and device, of `dtype`."""
        if not isinstance(dtype, DType):
            raise ValueError(f"fg.cast: dtype must be a DType, got {dtype!r}")
        x = expect_tensor("fg.cast", "input", x)
        return [TensorType(dtype, x.shape, x.device)]


def cast(x: TensorValue, dtype: DType) -> TensorValue:
    """Convert `x` to `dtype`.

    Example:
        >>> y = ops.cast(x, DType.bfloat16)
    """
    return emit_tensor(CastOp(x, dtype=dtype))


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

    def __init__(self, input: Operand, *, min: float | None = None, max: float | None = None) -> None:
        props = {k: _f64(v) for k, v in (("min", min), ("max", max)) if v is not None}
        super().__init__([input], props, rule=partial(self.rule, min=min, max=max))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, min=_bound(self.min), max=_bound(self.max))

    @staticmethod
    def rule(x: Attribute, *, min: float | None, max: float | None) -> list[Attribute]:
        """The shape rule: `x` keeps its type; `min <= max` when both are given."""
        x = expect_tensor("fg.clamp", "input", x)
        if min is not None and max is not None and min > max:
            raise ValueError(f"fg.clamp: min ({min}) > max ({max})")
        return [x]


def _bound(attr: FloatAttr | None) -> float | None:
    return None if attr is None else attr.value.data


def clamp(x: TensorValue, min: float | None = None, max: float | None = None) -> TensorValue:
    """Clamp `x` to `[min, max]`. At least one bound is required."""
    if min is None and max is None:
        raise ValueError("fg.clamp: give min, max or both")
    return emit_tensor(ClampOp(x, min=min, max=max))


@torch_impl(ClampOp)
def _clamp_torch(op: ClampOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    return torch.clamp(x, _bound(op.min), _bound(op.max))
