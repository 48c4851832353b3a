"""`fg.silu_mul`: the gated MLP's `silu(gate) * up` in one op (one kernel on CUDA instead of two).

Two forms: `fg.silu_mul %gate, %up` (two `[..., I]` tensors of one type) and `fg.silu_mul %gu`
(one `[..., 2I]` tensor: the stacked gate_up projection's output, gate columns first), which
reads the halves in place (as the unfused split's views do). The math is the unfused ops' to the bit:
`silu` rounded to the input dtype, then the product rounded again (`silu_mul_math`); the pass
`fuse-silu-mul` rewrites `fg.mul(fg.silu(a), b)` into it.

Example:
    >>> y = ops.silu_mul(gate, up)     # [T, I], [T, I] -> [T, I]
    >>> y = ops.silu_mul(gate_up)      # [T, 2I] -> [T, I]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_operand_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType, shape_str
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_same_device, expect_tensor

__all__ = ["SiluMulOp", "silu_mul", "silu_mul_math"]

_OP = "fg.silu_mul"


@register_op
@irdl_op_definition
class SiluMulOp(FgOp):
    """`fg.silu_mul`: `silu(gate) * up`, or with one operand `silu(x[..., :I]) * x[..., I:]`.

    `%y = fg.silu_mul %gate, %up : t, t -> t` or `%y = fg.silu_mul %gu : t2 -> t`. The arguments
    are those of `silu_mul`.

    Example:
        >>> op = SiluMulOp(gate_up)        # [T, 2I] -> [T, I]
    """

    name = "fg.silu_mul"
    gate = operand_def(TensorType)
    up = opt_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$gate (`,` $up^)? attr-dict `:` type($gate) (`,` type($up)^)? `->` type($result)"

    def __init__(self, gate: Operand, up: Operand | None = None) -> None:
        super().__init__([gate, up], rule=self.rule)

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.gate.type, None if self.up is None else self.up.type)

    @staticmethod
    def rule(gate: Any, up: Any = None) -> list[Attribute]:
        """The shape rule: float `gate` of rank >= 1; with `up`, both of one type (the result's);
        without, gate's last dim is a static even 2I and the result's is I."""
        gate = expect_tensor(_OP, "gate", gate)
        if not gate.dtype.is_float:
            raise ValueError(f"{_OP}: gate dtype must be a float type, got {gate.dtype.name}")
        if gate.rank < 1:
            raise ValueError(f"{_OP}: gate must have rank >= 1, got a scalar")
        if up is not None:
            up = expect_tensor(_OP, "up", up)
            expect_same_device(_OP, gate=gate, up=up)
            if up != gate:
                raise ValueError(
                    f"{_OP}: up {shape_str(up.shape)} {up.dtype.name} must have gate's type "
                    f"{shape_str(gate.shape)} {gate.dtype.name}"
                )
            return [gate]
        last = gate.shape[-1]
        if not last.is_static or last.value % 2:
            raise ValueError(f"{_OP}: without up, gate dim -1 must be a static even 2I, got {last}")
        return [TensorType(gate.dtype, [*gate.shape[:-1], Dim(last.value // 2)], gate.device)]


def silu_mul(gate: TensorValue, up: TensorValue | None = None) -> TensorValue:
    """`silu(gate) * up`; without `up`, `silu(gate[..., :I]) * gate[..., I:]` for gate `[..., 2I]`.

    Args:
        gate: float `[..., I]`, or `[..., 2I]` (I static) when `up` is None.
        up: gate's type, or None.

    Returns:
        `[..., I]` of gate's dtype.

    Example:
        >>> y = ops.silu_mul(gate_up)              # [T, 2I] -> [T, I]
    """
    return emit_tensor(SiluMulOp(gate, up))


def silu_mul_math(gate: Tensor, up: Tensor | None) -> Tensor:
    """The aten math, as the unfused `fg.silu` then `fg.mul` compute it (two roundings)."""
    if up is None:
        gate, up = gate.chunk(2, dim=-1)
    return torch.mul(torch.nn.functional.silu(gate), up)


@torch.library.custom_op("fusegraph::silu_mul", mutates_args=())
def silu_mul_custom(gate: Tensor, up: Tensor | None) -> Tensor:
    """`torch.ops.fusegraph.silu_mul`: the aten math by default; the Triton kernel
    (`runtime/kernels/silu_mul.py`) is registered on top for CUDA."""
    return silu_mul_math(gate, up).contiguous()


@silu_mul_custom.register_fake
def _silu_mul_fake(gate: Tensor, up: Tensor | None) -> Tensor:
    shape = gate.shape if up is not None else (*gate.shape[:-1], gate.shape[-1] // 2)
    return gate.new_empty(shape)


@torch_impl(SiluMulOp)
def _silu_mul_torch(op: SiluMulOp, gate: Tensor, up: Tensor | None, *, ctx: LoweringContext) -> Tensor:
    # The custom op exists for its CUDA kernel: lowerings (to_torch_mlir, IREE) and CPU runs keep the aten math.
    if ctx.mode == "custom" and torch.device(ctx.device).type == "cuda":
        y: Tensor = torch.ops.fusegraph.silu_mul(gate, up)
        return y
    return silu_mul_math(gate, up)
