"""`fg.gptq.permute_columns`: the output columns of GPTQ checkpoint tensors, reordered by a perm.

`fold-act-order-permutation` uses it to make the projection that produces an act-order
matmul's input write that input already permuted: `y[:, perm]` of `x @ W` is `x @ W[:, perm]`,
so permuting W's columns (qweight, qzeros, scales, bias) once, at bind time, replaces the
per-call permutation of the activations. Its operands are weights (and a repack's perm), so
the eager runtime folds it at compile time (`runtime/fold.py`).

The last axis of the operand holds N = parts·P columns in `parts` equal blocks of P (a stacked
gate_up projection: parts = 2); column i of block j becomes column `perm[i]` of that block:
`out[..., j·P + i] = t[..., j·P + perm[i]]`. With `packed_bits` the last axis packs columns
at that many bits per value into int32 words (GPTQ's qzeros `[G, N·bits/32]`): the values are
unpacked, gathered and packed again.

Example:
    >>> qw = ops.gptq_permute_columns(gate_up_qweight, perm, parts=2)           # [K/8, 2I]
    >>> qz = ops.gptq_permute_columns(gate_up_qzeros, perm, parts=2, packed_bits=4)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor
from xdsl.dialects.builtin import IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops._ragged import is_tracing
from fusegraph.ops.gptq_packing import ALLOWED_BITS, pack_rows, unpack_rows

__all__ = ["GptqPermuteColumnsOp", "gptq_permute_columns", "permute_columns"]

_OP = "fg.gptq.permute_columns"
PACKED_BITS = (0, *ALLOWED_BITS)


@register_op
@irdl_op_definition
class GptqPermuteColumnsOp(FgOp):
    """`fg.gptq.permute_columns`: `t[..., j·P + perm[i]]` at column `j·P + i`, for each of `parts` blocks.

    `%y = fg.gptq.permute_columns %t, %perm {parts = 2 : i64, packed_bits = 0 : i64}`; the result
    has t's type. The arguments are those of `gptq_permute_columns`.

    Example:
        >>> op = GptqPermuteColumnsOp(qzeros, perm, parts=2, packed_bits=4)
    """

    name = "fg.gptq.permute_columns"
    input = operand_def(TensorType)
    perm = operand_def(TensorType)
    parts_attr = prop_def(IntegerAttr, prop_name="parts")
    packed_bits_attr = prop_def(IntegerAttr, prop_name="packed_bits")
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $perm attr-dict `:` type($input) `,` type($perm) `->` type($result)"

    def __init__(self, input: Operand, perm: Operand, *, parts: int = 1, packed_bits: int = 0) -> None:
        props = {"parts": IntegerAttr(parts, i64), "packed_bits": IntegerAttr(packed_bits, i64)}
        super().__init__([input, perm], props, rule=partial(self.rule, parts=parts, packed_bits=packed_bits))

    @property
    def parts(self) -> int:
        """How many equal blocks of P columns the last axis holds (each permuted by perm)."""
        return self.parts_attr.value.data

    @property
    def packed_bits(self) -> int:
        """0: one column per element; else the bits per column value packed in int32 words."""
        return self.packed_bits_attr.value.data

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, self.perm.type, parts=self.parts, packed_bits=self.packed_bits)

    @staticmethod
    def rule(t: Any, perm: Any, *, parts: int, packed_bits: int) -> list[Attribute]:
        """The shape rule: t of rank 1 or 2 with a static last dim of N columns (N·bits/32 int32
        words when packed), perm int32 `[P]` static, N == parts·P; the result is t's type."""
        t, perm = expect_tensor(_OP, "input", t), expect_tensor(_OP, "perm", perm)
        if t.rank not in (1, 2):
            raise ValueError(f"{_OP}: input must have rank 1 or 2, got {t.rank}")
        expect_rank(_OP, "perm", perm, 1)
        expect_dtype(_OP, "perm", perm, [DType.int32])
        expect_same_device(_OP, input=t, perm=perm)
        if not (isinstance(parts, int) and parts >= 1):
            raise ValueError(f"{_OP}: parts must be an int >= 1, got {parts!r}")
        if packed_bits not in PACKED_BITS:
            raise ValueError(
                f"{_OP}: packed_bits must be one of {', '.join(map(str, PACKED_BITS))}, got {packed_bits}"
            )
        last, p = t.shape[-1], perm.shape[0]
        if not (last.is_static and p.is_static):
            raise ValueError(f"{_OP}: input's last dim ({last}) and perm dim 0 ({p}) must be static")
        n = last.value
        if packed_bits:
            expect_dtype(_OP, "input", t, [DType.int32])
            expect_rank(_OP, "input", t, 2)
            words = 3 if packed_bits == 3 else 1
            if n % words:
                raise ValueError(f"{_OP}: input dim -1 ({n}) is not whole 3-word blocks of 3-bit values")
            n = n * 32 // packed_bits
        if n != parts * p.value:
            what = (
                f"input dim -1 ({last.value} words = {n} columns)" if packed_bits else f"input dim -1 ({n})"
            )
            raise ValueError(f"{_OP}: {what} != parts ({parts}) * perm dim 0 ({p.value})")
        return [t]


def gptq_permute_columns(
    t: TensorValue, perm: TensorValue, *, parts: int = 1, packed_bits: int = 0
) -> TensorValue:
    """The columns of `t` reordered by `perm` within each of `parts` equal blocks.

    Args:
        t: `[N]` or `[R, N]` (a bias, scales, qweight), or with `packed_bits` int32 `[R, N·bits/32]`
            (qzeros).
        perm: int32 `[P]`, a permutation of `range(P)`; N = parts·P.
        parts: the number of blocks (2 for a stacked gate_up projection, whose columns are
            [gate | up]).
        packed_bits: 0, or the bits per value packed along the last axis (2, 3, 4 or 8).

    Returns:
        t's type: column `j·P + i` is t's column `j·P + perm[i]`.

    Example:
        >>> s = ops.gptq_permute_columns(scales, perm, parts=2)      # [G, 2P] -> [G, 2P]
    """
    return emit_tensor(GptqPermuteColumnsOp(t, perm, parts=parts, packed_bits=packed_bits))


def permute_columns(t: Tensor, perm: Tensor, *, parts: int = 1, packed_bits: int = 0) -> Tensor:
    """The torch implementation of `fg.gptq.permute_columns` (any device).

    Raises:
        ValueError: perm is not a permutation of 0..P-1 (checked unless tracing or capturing).
    """
    p = perm.shape[0]
    if not is_tracing(perm):
        _check_perm(perm)
    offsets = torch.arange(parts, dtype=torch.int64, device=perm.device) * p
    index = (offsets[:, None] + perm.to(torch.int64)[None, :]).reshape(-1)
    if not packed_bits:
        return t.index_select(-1, index)
    values = unpack_rows(t.t(), packed_bits)  # [N, R]: column values, one row per column
    return pack_rows(values.index_select(0, index), packed_bits).t().contiguous()


def _check_perm(perm: Tensor) -> None:
    """A ValueError naming the first entry that is out of 0..P-1 or repeated (one host read)."""
    p = perm.shape[0]
    if torch.equal(perm.to(torch.int64).sort().values, torch.arange(p, device=perm.device)):
        return
    seen: dict[int, int] = {}
    for j, v in enumerate(perm.tolist()):
        if not 0 <= v < p:
            raise ValueError(f"{_OP}: perm must be a permutation of 0..{p - 1}, got perm[{j}] = {v}")
        if (i := seen.setdefault(v, j)) != j:
            raise ValueError(
                f"{_OP}: perm must be a permutation of 0..{p - 1}, got perm[{i}] = perm[{j}] = {v}"
            )


@torch_impl(GptqPermuteColumnsOp)
def _gptq_permute_columns_torch(
    op: GptqPermuteColumnsOp, t: Tensor, perm: Tensor, *, ctx: LoweringContext
) -> Tensor:
    return permute_columns(t, perm, parts=op.parts, packed_bits=op.packed_bits)
