"""`fg.add_rms_norm`: a residual add and the RMSNorm of its sum, as one op (one kernel on CUDA).

`%s, %y = fg.add_rms_norm %a, %b, %w perm %p {eps = 1e-05 : f64}` is `%s = fg.add %a, %b`
(rounded to a's dtype, as `fg.add` stores it) and `%y = fg.rms_norm %s, %w perm %p`: a decoder
block's residual stream and the next norm's output, which one launch writes while reading a
and b once (vLLM's fused_add_rms_norm). `perm` is optional, as on `fg.rms_norm`. The pass
`fuse-add-rms-norm` makes it from the two ops; the results are bitwise those of the two ops'
torch implementations.

Example:
    >>> h, y = ops.add_rms_norm(x, attn_out, g.add_weight("norm.weight", TensorType(DType.float16, [64])), 1e-5)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.graph import emit
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_tensor
from fusegraph.ops.norm import check_perm, norm_operands, rms_norm_math

__all__ = ["AddRmsNormOp", "add_rms_norm", "add_rms_norm_math"]

_OP = "fg.add_rms_norm"


@register_op
@irdl_op_definition
class AddRmsNormOp(FgOp):
    """`fg.add_rms_norm {eps = 1e-06 : f64}`: `s = lhs + rhs`, `y = rms_norm(s, weight)[..., perm]`.

    Example:
        >>> op = AddRmsNormOp(x, attn_out, w, eps=1e-6)   # op.residual, op.result
    """

    name = "fg.add_rms_norm"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    weight = operand_def(TensorType)
    perm = opt_operand_def(TensorType)
    eps = prop_def(FloatAttr)
    residual = result_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$lhs `,` $rhs `,` $weight (`perm` $perm^)? attr-dict `:` type($lhs) `,` type($rhs) `,` type($weight) "
        "(`perm` type($perm)^)? `->` type($residual) `,` type($result)"
    )

    def __init__(
        self, lhs: Operand, rhs: Operand, weight: Operand, perm: Operand | None = None, *, eps: float
    ) -> None:
        props = {"eps": FloatAttr(float(eps), Float64Type())}
        super().__init__([lhs, rhs, weight, perm], props, rule=partial(self.rule, eps=eps))

    def infer_types(self) -> Sequence[Attribute]:
        perm = None if self.perm is None else self.perm.type
        return self.rule(self.lhs.type, self.rhs.type, self.weight.type, perm, eps=self.eps.value.data)

    @staticmethod
    def rule(lhs: Any, rhs: Any, weight: Any, perm: Any = None, *, eps: float) -> list[Attribute]:
        """The shape rule: lhs and rhs of one type (no broadcasting); weight and perm as for
        `fg.rms_norm` of lhs; both results are lhs's type."""
        lhs_t, rhs_t = expect_tensor(_OP, "lhs", lhs), expect_tensor(_OP, "rhs", rhs)
        if rhs_t != lhs_t:
            raise ValueError(f"{_OP}: rhs type {rhs_t} != lhs type {lhs_t} (the add does not broadcast)")
        x = norm_operands(_OP, lhs_t, weight, perm, eps, x_name="lhs")
        return [x, x]


def add_rms_norm(
    lhs: TensorValue,
    rhs: TensorValue,
    weight: TensorValue,
    eps: float = 1e-6,
    perm: TensorValue | None = None,
) -> tuple[TensorValue, TensorValue]:
    """`s = lhs + rhs` and `rms_norm(s, weight, eps, perm)` as one op.

    Args:
        lhs, rhs: `[..., D]` float, one type (the residual stream and a block's output).
        weight: `[D]`, lhs's dtype.
        eps: added to the mean of squares, >= 0.
        perm: optional int32 `[D]` (D static): the normed result's last dim is permuted.

    Returns:
        (s, y), both of lhs's type.

    Example:
        >>> h, y = ops.add_rms_norm(x, attn_out, w, 1e-5)     # h = x + attn_out, y = rms_norm(h, w)
    """
    op = emit(AddRmsNormOp(lhs, rhs, weight, perm, eps=eps))
    return TensorValue(op.residual), TensorValue(op.result)


def add_rms_norm_math(
    lhs: torch.Tensor, rhs: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The aten math: the add in lhs's dtype (as `fg.add`), then `rms_norm_math` of the sum."""
    s = lhs + rhs
    return s, rms_norm_math(s, weight, perm, eps)


@torch.library.custom_op("fusegraph::add_rms_norm", mutates_args=())
def add_rms_norm_custom(
    lhs: torch.Tensor, rhs: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.ops.fusegraph.add_rms_norm`: the aten math by default; the Triton kernel
    (`runtime/kernels/rms_norm.py`) is registered on top for CUDA."""
    if perm is not None:
        check_perm(perm, lhs.shape[-1])
    s, y = add_rms_norm_math(lhs, rhs, weight, perm, eps)
    return s.contiguous(), y.contiguous()


@add_rms_norm_custom.register_fake
def _add_rms_norm_fake(
    lhs: torch.Tensor, rhs: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return lhs.new_empty(lhs.shape), lhs.new_empty(lhs.shape)


@torch_impl(AddRmsNormOp)
def _add_rms_norm_torch(
    op: AddRmsNormOp,
    lhs: torch.Tensor,
    rhs: torch.Tensor,
    weight: torch.Tensor,
    perm: torch.Tensor | None,
    *,
    ctx: LoweringContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    if perm is not None:
        check_perm(perm, lhs.shape[-1])
    # As for fg.rms_norm: the custom op (its CUDA kernel) on CUDA runs only; aten elsewhere.
    if ctx.mode == "custom" and torch.device(ctx.device).type == "cuda":
        s, y = torch.ops.fusegraph.add_rms_norm(lhs, rhs, weight, perm, op.eps.value.data)
        return s, y
    return add_rms_norm_math(lhs, rhs, weight, perm, op.eps.value.data)
