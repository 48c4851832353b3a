"""`fg.gptq.repack` and `fg.qmatmul.gptq_tiled`: GPTQ weights in the layout the CUDA kernels stream.

`fg.gptq.repack` turns AutoGPTQ/GPTQModel tensors into the tiled layout of `gptq_layout.py`
(64-column strips, pair-interleaved 128-row blocks, act-order rows sorted once, zeros in
CB-bit containers); `fg.qmatmul.gptq_tiled` is `x @ W` on it. The pass `gptq-repack` rewrites
`fg.qmatmul.gptq` into the pair for a CUDA target; the eager runtime folds the repack at
compile time (its operands are weights), so it runs once, when the weights are bound. On the
CPU (no pass) the checkpoint layout stays. Both ops have torch implementations that run anywhere.

Example:
    >>> r = ops.gptq_repack(qw, qz, g_idx, bits=4, group_size=128, sym=False, desc_act=True)
    >>> y = ops.qmatmul_gptq_tiled(x, r.qweight, scales, r.qzeros, r.perm, bits=4, group_size=128)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from xdsl.dialects.builtin import BoolAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from fusegraph.compiler._legacy_emit import emit
from fusegraph.compiler.impls import LoweringContext, fx_emitter, torch_impl
from fusegraph.compiler.opbase import FgOp, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops.gptq import GptqFormatProps, GptqQuantProps
from fusegraph.ops.gptq_layout import NB, container_bits, qmatmul_tiled_decomposed, repack, unrepack
from fusegraph.ops.gptq_repack_rules import num_groups, repack_props, repack_shape_rule, tiled_shape_rule

__all__ = ["GptqRepackOp", "QMatmulGptqTiledOp", "Repacked", "gptq_repack", "qmatmul_gptq_tiled", "repack",
           "unrepack"]  # fmt: skip


# --- fg.gptq.repack -------------------------------------------------------------------------
@register_op
@irdl_op_definition
class GptqRepackOp(GptqQuantProps, FgOp):
    """`fg.gptq.repack`: AutoGPTQ tensors -> (qweight_t, qzeros_t[, perm]) in the tiled layout.

    `%qt, %zt, %perm = fg.gptq.repack %qw zeros %qz g_idx %g {bits = 4 : i64, ...}`; zeros and
    g_idx are optional; perm is a result exactly when desc_act.
    """

    name = "fg.gptq.repack"
    qweight = operand_def(TensorType)
    qzeros = opt_operand_def(TensorType)
    g_idx = opt_operand_def(TensorType)
    bits_attr = prop_def(IntegerAttr, prop_name="bits")
    group_size_attr = prop_def(IntegerAttr, prop_name="group_size")
    sym_attr = prop_def(BoolAttr, prop_name="sym")
    desc_act_attr = prop_def(BoolAttr, prop_name="desc_act")
    zero_format_attr = prop_def(StringAttr, prop_name="zero_format")
    qweight_t = result_def(TensorType)
    qzeros_t = result_def(TensorType)
    perm = opt_result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (*FgOp.irdl_options, AttrSizedOperandSegments(as_property=True))  # type: ignore[assignment]
    assembly_format = (
        "$qweight (`zeros` $qzeros^)? (`g_idx` $g_idx^)? attr-dict `:` type($qweight) "
        "(`zeros` type($qzeros)^)? (`g_idx` type($g_idx)^)? `->` type(results)"
    )

    def infer_types(self) -> Sequence[Attribute]:
        return repack_shape_rule(
            self.qweight.type,
            None if self.qzeros is None else self.qzeros.type,
            None if self.g_idx is None else self.g_idx.type,
            bits=self.bits, group_size=self.group_size, sym=self.sym, desc_act=self.desc_act,
            zero_format=self.zero_format,
        )  # fmt: skip


class Repacked(NamedTuple):
    """The results of `fg.gptq.repack`: perm is None unless desc_act."""

    qweight: TensorValue
    qzeros: TensorValue
    perm: TensorValue | None


def gptq_repack(
    qweight: TensorValue,
    qzeros: TensorValue | None = None,
    g_idx: TensorValue | None = None,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    desc_act: bool,
    zero_format: str = "v1",
) -> Repacked:
    """The tiled layout of GPTQ tensors (`fusegraph.ops.gptq_layout` documents it).

    Args:
        qweight: int32 [K*bits/32, N]; K a multiple of 128, N of 64.
        qzeros: int32 [G, N*bits/32], or None when sym.
        g_idx: int32 [K] or None; with desc_act the rows are sorted by it (whole groups of
            group_size rows); without, it must be k // group_size (checked when it runs).
        bits, group_size, sym, desc_act, zero_format: as in `fg.qmatmul.gptq`; group_size -1
            or a multiple of 128.

    Returns:
        Repacked(qweight int32 [N/64, K*CB/32, 64], qzeros int32 [G, N*CB/32], perm int32 [K]
        or None), CB = 8 for 8-bit and 4 otherwise.

    Example:
        >>> r = ops.gptq_repack(qw, qz, bits=4, group_size=128, sym=False, desc_act=False)
    """
    props = repack_props(bits, group_size, sym, desc_act, zero_format)

    def rule() -> list[Any]:
        types = repack_shape_rule(
            qweight.type, None if qzeros is None else qzeros.type, None if g_idx is None else g_idx.type,
            bits=bits, group_size=group_size, sym=sym, desc_act=desc_act, zero_format=zero_format,
        )  # fmt: skip
        return [types[0], types[1], types[2:]]

    op = emit(GptqRepackOp, [qweight, qzeros, g_idx], props, result_types=rule)
    perm = TensorValue(op.results[2]) if desc_act else None
    return Repacked(TensorValue(op.results[0]), TensorValue(op.results[1]), perm)


@torch.library.custom_op("fusegraph::gptq_repack", mutates_args=())
def gptq_repack_custom(
    qweight: Tensor, qzeros: Tensor | None, g_idx: Tensor | None, bits: int, group_size: int, sym: bool,
    desc_act: bool, zero_format: str,
) -> list[Tensor]:  # fmt: skip
    """`torch.ops.fusegraph.gptq_repack`: [qweight_t, qzeros_t] (+ [perm] with desc_act)."""
    r = repack(qweight, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym, desc_act=desc_act,
               zero_format=zero_format)  # fmt: skip
    return list(r.values())


@gptq_repack_custom.register_fake
def _gptq_repack_fake(qweight: Tensor, qzeros: Tensor | None, g_idx: Tensor | None, bits: int, group_size: int,
                      sym: bool, desc_act: bool, zero_format: str) -> list[Tensor]:  # fmt: skip
    cb = container_bits(bits)
    k, n = qweight.shape[0] * 32 // bits, qweight.shape[1]
    out = [
        qweight.new_empty((n // NB, k * cb // 32, NB)),
        qweight.new_empty((num_groups(k, group_size), n * cb // 32)),
    ]
    return out + ([qweight.new_empty((k,))] if desc_act else [])


@torch_impl(GptqRepackOp)
def _gptq_repack_torch(
    op: GptqRepackOp, qweight: Tensor, qzeros: Tensor | None, g_idx: Tensor | None, *, ctx: LoweringContext
) -> tuple[Tensor, ...]:
    args = (op.bits, op.group_size, op.sym, op.desc_act, op.zero_format)
    if ctx.mode == "custom":
        return tuple(torch.ops.fusegraph.gptq_repack(qweight, qzeros, g_idx, *args))
    r = repack(qweight, qzeros, g_idx, bits=op.bits, group_size=op.group_size, sym=op.sym, desc_act=op.desc_act,
               zero_format=op.zero_format)  # fmt: skip
    return tuple(r.values())


@fx_emitter(GptqRepackOp)
def _gptq_repack_fx(e: Any, op: GptqRepackOp, *tensors: Any) -> Any:
    node = e.custom(op.name, torch.ops.fusegraph.gptq_repack.default, *tensors, results=op.result_types,
                    bits=op.bits, group_size=op.group_size, sym=op.sym, desc_act=op.desc_act,
                    zero_format=op.zero_format)  # fmt: skip
    return e.unpack(node, len(op.results))


# --- fg.qmatmul.gptq_tiled -------------------------------------------------------------------
@register_op
@irdl_op_definition
class QMatmulGptqTiledOp(GptqFormatProps, FgOp):
    """`fg.qmatmul.gptq_tiled`: `x [M, K] @ W [K, N]` with W in the tiled layout of `fg.gptq.repack`.

    `%y = fg.qmatmul.gptq_tiled %x, %qt, %s, %zt perm %p {bits = 4 : i64, ...}`; perm is present
    exactly for act-order weights.
    """

    name = "fg.qmatmul.gptq_tiled"
    x = operand_def(TensorType)
    qweight_t = operand_def(TensorType)
    scales = operand_def(TensorType)
    qzeros_t = operand_def(TensorType)
    perm = opt_operand_def(TensorType)
    bits_attr = prop_def(IntegerAttr, prop_name="bits")
    group_size_attr = prop_def(IntegerAttr, prop_name="group_size")
    zero_format_attr = prop_def(StringAttr, prop_name="zero_format")
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$x `,` $qweight_t `,` $scales `,` $qzeros_t (`perm` $perm^)? attr-dict `:` type($x) `,` "
        "type($qweight_t) `,` type($scales) `,` type($qzeros_t) (`perm` type($perm)^)? `->` type($result)"
    )

    def infer_types(self) -> Sequence[Attribute]:
        return [
            tiled_shape_rule(
                self.x.type,
                self.qweight_t.type,
                self.scales.type,
                self.qzeros_t.type,
                None if self.perm is None else self.perm.type,
                bits=self.bits,
                group_size=self.group_size,
                zero_format=self.zero_format,
            )  # fmt: skip
        ]


def qmatmul_gptq_tiled(
    x: TensorValue,
    qweight_t: TensorValue,
    scales: TensorValue,
    qzeros_t: TensorValue,
    perm: TensorValue | None = None,
    *,
    bits: int,
    group_size: int,
    zero_format: str = "v1",
) -> TensorValue:
    """`x @ W` for W repacked by `gptq_repack` (the pass `gptq-repack` emits this pair).

    Args:
        x: [M, K] float.
        qweight_t, qzeros_t, perm: the results of `gptq_repack` (perm only for act-order).
        scales: [G, N], the checkpoint's scales.
        bits, group_size, zero_format: as given to `gptq_repack`.

    Returns:
        [M, N] in x's dtype.

    Example:
        >>> r = ops.gptq_repack(qw, qz, g, bits=4, group_size=128, sym=False, desc_act=True)
        >>> y = ops.qmatmul_gptq_tiled(x, r.qweight, s, r.qzeros, r.perm, bits=4, group_size=128)
    """
    props = {"bits": IntegerAttr(bits, i64), "group_size": IntegerAttr(group_size, i64),
             "zero_format": StringAttr(zero_format)}  # fmt: skip

    def rule() -> list[TensorType]:
        return [tiled_shape_rule(x.type, qweight_t.type, scales.type, qzeros_t.type,
                                  None if perm is None else perm.type, bits=bits, group_size=group_size,
                                  zero_format=zero_format)]  # fmt: skip

    op = emit(QMatmulGptqTiledOp, [x, qweight_t, scales, qzeros_t, perm], props, result_types=rule)
    return TensorValue(op.results[0])


@torch.library.custom_op("fusegraph::qmatmul_gptq_tiled", mutates_args=())
def qmatmul_gptq_tiled_custom(
    x: Tensor, qweight_t: Tensor, scales: Tensor, qzeros_t: Tensor, perm: Tensor | None, bits: int, group_size: int,
    zero_format: str,
) -> Tensor:  # fmt: skip
    """`torch.ops.fusegraph.qmatmul_gptq_tiled`: the aten decomposition by default; the CUDA kernel
    (`runtime/kernels/gptq_tiled.py`) is registered on top."""
    return qmatmul_tiled_decomposed(x, qweight_t, scales, qzeros_t, perm, bits=bits, group_size=group_size,
                                    zero_format=zero_format)  # fmt: skip


@qmatmul_gptq_tiled_custom.register_fake
def _qmatmul_gptq_tiled_fake(x: Tensor, qweight_t: Tensor, *args: object) -> Tensor:
    return x.new_empty((x.shape[0], qweight_t.shape[0] * NB))


@torch_impl(QMatmulGptqTiledOp)
def _qmatmul_gptq_tiled_torch(
    op: QMatmulGptqTiledOp, x: Tensor, qweight_t: Tensor, scales: Tensor, qzeros_t: Tensor, perm: Tensor | None,
    *, ctx: LoweringContext,
) -> Tensor:  # fmt: skip
    params = (op.bits, op.group_size, op.zero_format)
    if ctx.mode == "custom":
        return torch.ops.fusegraph.qmatmul_gptq_tiled(x, qweight_t, scales, qzeros_t, perm, *params)
    return qmatmul_tiled_decomposed(x, qweight_t, scales, qzeros_t, perm, bits=op.bits, group_size=op.group_size,
                                    zero_format=op.zero_format)  # fmt: skip


@fx_emitter(QMatmulGptqTiledOp)
def _qmatmul_gptq_tiled_fx(e: Any, op: QMatmulGptqTiledOp, *tensors: Any) -> Any:
    return e.custom(op.name, torch.ops.fusegraph.qmatmul_gptq_tiled.default, *tensors, results=op.result_types,
                    bits=op.bits, group_size=op.group_size, zero_format=op.zero_format)  # fmt: skip
