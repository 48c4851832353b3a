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
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor
from xdsl.dialects.builtin import BoolAttr, IntegerAttr, StringAttr
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

from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit, emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops.gptq import (
    FLOATS,
    GptqFormatProps,
    GptqQuantProps,
    check_format,
    check_zeros_g_idx,
    expect_eq,
    expect_row_vector,
    gptq_props,
    num_groups,
    static_dim,
    type_of,
)
from fusegraph.ops.gptq_layout import (
    NB,
    container_bits,
    layout_error,
    qmatmul_tiled_decomposed,
    repack,
    unrepack,
)

__all__ = ["GptqRepackOp", "QMatmulGptqTiledOp", "Repacked", "gptq_repack", "qmatmul_gptq_tiled", "repack",
           "unrepack"]  # fmt: skip

_REPACK = "fg.gptq.repack"
_TILED = "fg.qmatmul.gptq_tiled"


# --- fg.gptq.repack -------------------------------------------------------------------------
@register_op
@irdl_op_definition
class GptqRepackOp(GptqQuantProps, FgOp):
    """`fg.gptq.repack`: AutoGPTQ tensors -> (qweight_t, qzeros_t[, perm]) in the tiled layout.

    `%qt, %zt, %perm = fg.gptq.repack %qw zeros %qz g_idx %g {bits = 4 : i64, ...}`; zeros and
    g_idx are optional; perm is a result exactly when desc_act. The arguments are those of
    `gptq_repack`.

    Example:
        >>> op = GptqRepackOp(qw, qz, bits=4, group_size=128, sym=False, desc_act=False)
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

    def __init__(
        self, qweight: Operand, qzeros: Operand | None = None, g_idx: Operand | None = None, *, bits: int,
        group_size: int, sym: bool, desc_act: bool, zero_format: str = "v1",
    ) -> None:  # fmt: skip
        params: dict[str, Any] = dict(bits=bits, group_size=group_size, sym=sym, desc_act=desc_act,
                                      zero_format=zero_format)  # fmt: skip
        super().__init__([qweight, qzeros, g_idx], gptq_props(params), rule=partial(self.rule, **params))

    def infer_types(self) -> Sequence[Attribute | Sequence[Attribute]]:
        return self.rule(self.qweight.type, type_of(self.qzeros), type_of(self.g_idx), **self.params)

    @staticmethod
    def rule(
        qweight: Attribute, qzeros: Attribute | None, g_idx: Attribute | None, *, bits: int, group_size: int,
        sym: bool, desc_act: bool, zero_format: str,
    ) -> list[Attribute | list[Attribute]]:  # fmt: skip
        """The shape rule: qweight int32 `[K*bits/32, N]` (K, N static, `layout_error` none),
        qzeros/g_idx as in `fg.qmatmul.gptq`; results `[N/64, K*CB/32, 64]`, `[G, N*CB/32]`
        and, with desc_act, perm `[K]`, all int32."""
        op = _REPACK
        check_format(op, bits, zero_format)
        qweight = expect_tensor(op, "qweight", qweight)
        expect_rank(op, "qweight", qweight, 2)
        expect_dtype(op, "qweight", qweight, [DType.int32])
        expect_same_device(
            op, qweight=qweight, qzeros=qzeros if isinstance(qzeros, TensorType) else None,
            g_idx=g_idx if isinstance(g_idx, TensorType) else None,
        )  # fmt: skip
        k = static_dim(op, "qweight", 0, qweight.shape[0]) * 32 // bits
        n = static_dim(op, "qweight", 1, qweight.shape[1])
        if (why := layout_error(k, n, group_size)) is not None:
            raise ValueError(f"{op}: {why}")
        groups = num_groups(k, group_size)
        check_zeros_g_idx(op, qzeros, g_idx, k=k, n=n, groups=groups, bits=bits, sym=sym, desc_act=desc_act)
        cb, dev = container_bits(bits), qweight.device
        perm: list[Attribute] = [TensorType(DType.int32, [k], dev)] if desc_act else []
        return [
            TensorType(DType.int32, [n // NB, k * cb // 32, NB], dev),
            TensorType(DType.int32, [groups, n * cb // 32], dev),
            perm,
        ]


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
    op = emit(GptqRepackOp(qweight, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym, desc_act=desc_act,
                           zero_format=zero_format))  # fmt: skip
    perm = None if op.perm is None else TensorValue(op.perm)
    return Repacked(TensorValue(op.qweight_t), TensorValue(op.qzeros_t), perm)


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
    if ctx.mode == "custom":
        return tuple(torch.ops.fusegraph.gptq_repack(qweight, qzeros, g_idx, *op.params.values()))
    return tuple(repack(qweight, qzeros, g_idx, **op.params).values())


# --- fg.qmatmul.gptq_tiled -------------------------------------------------------------------
@register_op
@irdl_op_definition
class QMatmulGptqTiledOp(GptqFormatProps, FgOp):
    """`fg.qmatmul.gptq_tiled`: `x [M, K] @ W [K, N]` with W in the tiled layout of `fg.gptq.repack`.

    `%y = fg.qmatmul.gptq_tiled %x, %qt, %s, %zt perm %p {bits = 4 : i64, ...}`; perm is present
    exactly for act-order weights. The arguments are those of `qmatmul_gptq_tiled`.

    Example:
        >>> op = QMatmulGptqTiledOp(x, r.qweight_t, s, r.qzeros_t, r.perm, bits=4, group_size=128)
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

    def __init__(
        self, x: Operand, qweight_t: Operand, scales: Operand, qzeros_t: Operand, perm: Operand | None = None,
        *, bits: int, group_size: int, zero_format: str = "v1",
    ) -> None:  # fmt: skip
        params: dict[str, Any] = dict(bits=bits, group_size=group_size, zero_format=zero_format)
        operands = [x, qweight_t, scales, qzeros_t, perm]
        super().__init__(operands, gptq_props(params), rule=partial(self.rule, **params))

    def infer_types(self) -> Sequence[Attribute]:
        types = (self.x.type, self.qweight_t.type, self.scales.type, self.qzeros_t.type)
        return self.rule(*types, type_of(self.perm), **self.params)

    @staticmethod
    def rule(
        x: Attribute, qweight_t: Attribute, scales: Attribute, qzeros_t: Attribute, perm: Attribute | None, *,
        bits: int, group_size: int, zero_format: str,
    ) -> list[Attribute]:  # fmt: skip
        """The shape rule: x `[M, K]` float, qweight_t/qzeros_t as `fg.gptq.repack` gives them,
        scales `[G, N]`, perm int32 `[K]`; the result is `[M, N]` of x's dtype."""
        op = _TILED
        check_format(op, bits, zero_format)
        x, qweight_t = expect_tensor(op, "x", x), expect_tensor(op, "qweight_t", qweight_t)
        scales, qzeros_t = expect_tensor(op, "scales", scales), expect_tensor(op, "qzeros_t", qzeros_t)
        for name, t, rank in (("x", x, 2), ("qweight_t", qweight_t, 3), ("scales", scales, 2),
                              ("qzeros_t", qzeros_t, 2)):  # fmt: skip
            expect_rank(op, name, t, rank)
        expect_dtype(op, "x", x, FLOATS)
        expect_dtype(op, "scales", scales, FLOATS)
        expect_dtype(op, "qweight_t", qweight_t, [DType.int32])
        expect_dtype(op, "qzeros_t", qzeros_t, [DType.int32])
        expect_same_device(op, x=x, qweight_t=qweight_t, scales=scales, qzeros_t=qzeros_t,
                           perm=perm if isinstance(perm, TensorType) else None)  # fmt: skip
        k = static_dim(op, "x", 1, x.shape[1])
        n = static_dim(op, "qweight_t", 0, qweight_t.shape[0]) * NB
        if (why := layout_error(k, n, group_size)) is not None:
            raise ValueError(f"{op}: {why}")
        cb = container_bits(bits)
        groups = num_groups(k, group_size)
        expect_eq(op, "qweight_t dim 1", qweight_t.shape[1], k * cb // 32, "K*CB/32")
        expect_eq(op, "qweight_t dim 2", qweight_t.shape[2], NB, "64")
        expect_eq(op, "scales dim 0", scales.shape[0], groups, "G")
        expect_eq(op, "scales dim 1", scales.shape[1], n, "N")
        expect_eq(op, "qzeros_t dim 0", qzeros_t.shape[0], groups, "G")
        expect_eq(op, "qzeros_t dim 1", qzeros_t.shape[1], n * cb // 32, "N*CB/32")
        if perm is not None:
            expect_row_vector(op, "perm", perm, k)
        return [TensorType(x.dtype, [x.shape[0], n], x.device)]


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
    op = QMatmulGptqTiledOp(x, qweight_t, scales, qzeros_t, perm, bits=bits, group_size=group_size,
                            zero_format=zero_format)  # fmt: skip
    return emit_tensor(op)


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
    if ctx.mode == "custom":
        y: Tensor = torch.ops.fusegraph.qmatmul_gptq_tiled(
            x, qweight_t, scales, qzeros_t, perm, *op.params.values()
        )
        return y
    return qmatmul_tiled_decomposed(x, qweight_t, scales, qzeros_t, perm, **op.params)
