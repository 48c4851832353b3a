"""Normalizations: `fg.rms_norm` (over the last dim, with a `[D]` weight) and `fg.softmax`.

Both compute in float32 and return the input dtype, so bf16/f16 graphs keep precision in
the reduction (as HF Llama and MAX do).

Example:
    >>> h = ops.rms_norm(x, g.add_weight("norm.weight", TensorType(DType.float32, [64])), 1e-6)
    >>> p = ops.softmax(scores, axis=-1)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr, IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_dim, expect_rank, expect_same_device, expect_tensor, normalize_axis


# --- rms_norm -------------------------------------------------------------------------
@register_op
@irdl_op_definition
class RmsNormOp(FgOp):
    """`fg.rms_norm {eps = 1e-06 : f64}`: `x / sqrt(mean(x**2, -1) + eps) * weight`."""

    name = "fg.rms_norm"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $weight attr-dict `:` type($input) `,` type($weight) `->` type($result)"

    def __init__(self, input: Operand, weight: Operand, *, eps: float) -> None:
        props = {"eps": FloatAttr(float(eps), Float64Type())}
        super().__init__([input, weight], props, rule=partial(self.rule, eps=eps))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, self.weight.type, eps=self.eps.value.data)

    @staticmethod
    def rule(x: Any, weight: Any, *, eps: float) -> list[Attribute]:
        """The shape rule: `x` keeps its type; `weight` is `[x.shape[-1]]` of x's dtype."""
        x = expect_tensor("fg.rms_norm", "input", x)
        weight = expect_tensor("fg.rms_norm", "weight", weight)
        expect_same_device("fg.rms_norm", input=x, weight=weight)
        if not x.dtype.is_float:
            raise ValueError(f"fg.rms_norm: input dtype must be a float type, got {x.dtype.name}")
        if x.rank < 1:
            raise ValueError("fg.rms_norm: input must have rank >= 1, got a scalar")
        expect_rank("fg.rms_norm", "weight", weight, 1)
        if weight.dtype != x.dtype:
            raise ValueError(f"fg.rms_norm: weight dtype {weight.dtype.name} != input dtype {x.dtype.name}")
        expect_dim("fg.rms_norm", "weight dim 0", weight.shape[0], x.shape[-1])
        if not eps >= 0.0:
            raise ValueError(f"fg.rms_norm: eps must be >= 0, got {eps=}")
        return [x]


def rms_norm(x: TensorValue, weight: TensorValue, eps: float = 1e-6) -> TensorValue:
    """RMS-normalize the last dim of `x` and scale by `weight` (`[D]`, x's dtype).

    Example:
        >>> y = ops.rms_norm(x, w, eps=1e-6)     # x [T, 64], w [64] -> [T, 64]
    """
    return emit_tensor(RmsNormOp(x, weight, eps=eps))


@torch_impl(RmsNormOp)
def _rms_norm_torch(
    op: RmsNormOp, x: torch.Tensor, weight: torch.Tensor, *, ctx: LoweringContext
) -> torch.Tensor:
    xf = x.to(torch.float32)
    normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + op.eps.value.data)
    return (normed * weight.to(torch.float32)).to(x.dtype)


# --- softmax --------------------------------------------------------------------------
@register_op
@irdl_op_definition
class SoftmaxOp(FgOp):
    """`fg.softmax {axis = 1 : i64}`: `exp(x) / sum(exp(x), axis)`, numerically stable."""

    name = "fg.softmax"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: Operand, *, axis: int) -> None:
        super().__init__([input], {"axis": IntegerAttr(axis, i64)}, rule=partial(self.rule, axis=axis))

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, axis=self.axis.value.data)

    @staticmethod
    def rule(x: Any, *, axis: int) -> list[Attribute]:
        """The shape rule: a float `x` keeps its type; `axis` is a dim of x."""
        x = expect_tensor("fg.softmax", "input", x)
        if not x.dtype.is_float:
            raise ValueError(f"fg.softmax: input dtype must be a float type, got {x.dtype.name}")
        normalize_axis("fg.softmax", axis, x.rank)
        return [x]


def softmax(x: TensorValue, axis: int = -1) -> TensorValue:
    """Softmax of `x` along `axis` (stored normalized, so the IR prints `axis = 1` for -1 of rank 2).

    Example:
        >>> p = ops.softmax(scores)              # over the last dim
    """
    axis = normalize_axis("fg.softmax", axis, x.rank) if x.rank else axis
    return emit_tensor(SoftmaxOp(x, axis=axis))


@torch_impl(SoftmaxOp)
def _softmax_torch(op: SoftmaxOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    return torch.softmax(x.to(torch.float32), dim=op.axis.value.data).to(x.dtype)
