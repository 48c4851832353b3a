"""`fg.matmul`: `lhs @ rhs` for `[..., M, K] @ [K, N]` or equal-batch `[..., M, K] @ [..., K, N]`.

Example:
    >>> y = x @ w.T          # x [T, 64], w [32, 64] -> y [T, 32]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_same_device, expect_tensor


@register_op
@irdl_op_definition
class MatmulOp(FgOp):
    """`fg.matmul`: matrix product, batched over leading dims."""

    name = "fg.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)"

    def __init__(self, lhs: Operand, rhs: Operand) -> None:
        super().__init__([lhs, rhs], rule=self.rule)

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.lhs.type, self.rhs.type)

    @staticmethod
    def rule(lhs: Attribute, rhs: Attribute) -> list[Attribute]:
        """The shape rule: `[..., M, K] @ [K, N]` or equal-batch `[..., M, K] @ [..., K, N]`."""
        lhs = expect_tensor("matmul", "lhs", lhs)
        rhs = expect_tensor("matmul", "rhs", rhs)
        expect_same_device("matmul", lhs=lhs, rhs=rhs)
        if lhs.rank < 2 or rhs.rank < 2:
            raise ValueError(f"matmul: operands need rank >= 2, got lhs rank {lhs.rank}, rhs rank {rhs.rank}")
        if lhs.dtype != rhs.dtype:
            raise ValueError(f"matmul: lhs dtype {lhs.dtype.name} != rhs dtype {rhs.dtype.name}")
        if lhs.shape[-1] != rhs.shape[-2]:
            raise ValueError(
                f"matmul: lhs dim {lhs.rank - 1} ({lhs.shape[-1]}) != rhs dim {rhs.rank - 2} ({rhs.shape[-2]})"
            )
        if rhs.rank > 2:
            if rhs.rank != lhs.rank:
                raise ValueError(f"matmul: batched rhs rank {rhs.rank} != lhs rank {lhs.rank}")
            for i, (a, b) in enumerate(zip(lhs.shape[:-2], rhs.shape[:-2], strict=True)):
                if a != b:
                    raise ValueError(f"matmul: lhs batch dim {i} ({a}) != rhs batch dim {i} ({b})")
        return [TensorType(lhs.dtype, [*lhs.shape[:-1], rhs.shape[-1]], lhs.device)]


def matmul(lhs: TensorValue, rhs: TensorValue) -> TensorValue:
    """`lhs @ rhs`. A mismatch names the dims: `matmul: lhs dim 1 (64) != rhs dim 0 (32)`."""
    return emit_tensor(MatmulOp(lhs, rhs))


@torch_impl(MatmulOp)
def _matmul_torch(
    op: MatmulOp, lhs: torch.Tensor, rhs: torch.Tensor, *, ctx: LoweringContext
) -> torch.Tensor:
    return torch.matmul(lhs, rhs)
