"""`fg.qmatmul.gptq`: x @ W for a GPTQ-quantized W (AutoGPTQ/GPTQModel tensors).

The op class, its builder, its shape rule, the `fusegraph::qmatmul_gptq` torch.library
op and the torch implementation live here; packing and the aten math live in
`gptq_packing.py` and are re-exported.

Example:
    >>> t = pack(w, bits=4, group_size=128, sym=False)          # w [N, K] float
    >>> qw = g.add_weight("q_proj.qweight", TensorType(DType.int32, [K // 8, N], cpu))
    >>> y = ops.qmatmul_gptq(x, qw, scales, qzeros, g_idx, bits=4, group_size=128,
    ...                      sym=False, desc_act=False)           # [M, N]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from xdsl.dialects.builtin import BoolAttr, Float64Type, FloatAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from fusegraph.compiler._legacy_emit import emit
from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.impls import LoweringContext, fx_emitter, torch_impl
from fusegraph.compiler.opbase import FgOp, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops.gptq_packing import (
    ALLOWED_BITS,
    ZERO_FORMATS,
    act_order_g_idx,
    dequantize,
    pack,
    pack_rows,
    qmatmul_decomposed,
    unpack,
    unpack_rows,
)

__all__ = [
    "QMatmulGptqOp",
    "act_order_g_idx",
    "dequantize",
    "pack",
    "pack_rows",
    "qmatmul_decomposed",
    "qmatmul_gptq",
    "unpack",
    "unpack_rows",
]

_OP = "fg.qmatmul.gptq"
_FLOATS = (DType.float32, DType.float16, DType.bfloat16)


class GptqFormatProps:
    """Typed accessors of the GPTQ properties an op class declares (`bits_attr`, ...), shared
    by `fg.qmatmul.gptq`, `fg.gptq.repack` and `fg.qmatmul.gptq_tiled`."""

    if TYPE_CHECKING:  # declared by the op class (prop_def); xDSL refuses plain annotations
        bits_attr: IntegerAttr
        group_size_attr: IntegerAttr
        zero_format_attr: StringAttr

    @property
    def bits(self) -> int:
        """Bits per quantized value: 2, 3, 4 or 8."""
        return self.bits_attr.value.data

    @property
    def group_size(self) -> int:
        """Input rows per group; -1 means one group."""
        return self.group_size_attr.value.data

    @property
    def zero_format(self) -> str:
        """ "v1" (qzeros stores z - 1) or "v2" (qzeros stores z)."""
        return self.zero_format_attr.data


class GptqQuantProps(GptqFormatProps):
    """`GptqFormatProps` plus `sym` and `desc_act`."""

    if TYPE_CHECKING:
        sym_attr: BoolAttr
        desc_act_attr: BoolAttr

    @property
    def sym(self) -> bool:
        """Symmetric quantization (z = 2**(bits-1) when qzeros is absent)."""
        return bool(self.sym_attr.value.data)

    @property
    def desc_act(self) -> bool:
        """Act-order: g_idx assigns rows to groups through a permutation."""
        return bool(self.desc_act_attr.value.data)


@register_op
@irdl_op_definition
class QMatmulGptqOp(GptqQuantProps, FgOp):
    """`fg.qmatmul.gptq`: `x [M, K] @ dequant(qweight, scales, qzeros, g_idx) [K, N]`.

    `%y = fg.qmatmul.gptq %x, %qw, %s zeros %qz g_idx %g {bits = 4 : i64, ...} : ...`;
    `zeros` and `g_idx` are optional (absent qzeros needs sym; absent g_idx means
    k // group_size).
    """

    name = "fg.qmatmul.gptq"
    x = operand_def(TensorType)
    qweight = operand_def(TensorType)
    scales = operand_def(TensorType)
    qzeros = opt_operand_def(TensorType)
    g_idx = opt_operand_def(TensorType)
    bits_attr = prop_def(IntegerAttr, prop_name="bits")
    group_size_attr = prop_def(IntegerAttr, prop_name="group_size")
    sym_attr = prop_def(BoolAttr, prop_name="sym")
    desc_act_attr = prop_def(BoolAttr, prop_name="desc_act")
    zero_format_attr = prop_def(StringAttr, prop_name="zero_format")
    clip_attr = opt_prop_def(FloatAttr, prop_name="clip")
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (*FgOp.irdl_options, AttrSizedOperandSegments(as_property=True))  # type: ignore[assignment]
    assembly_format = (
        "$x `,` $qweight `,` $scales (`zeros` $qzeros^)? (`g_idx` $g_idx^)? attr-dict `:` "
        "type($x) `,` type($qweight) `,` type($scales) (`zeros` type($qzeros)^)? "
        "(`g_idx` type($g_idx)^)? `->` type($result)"
    )

    @property
    def clip(self) -> float | None:
        """Clamp of the dequantized weight to [-clip, clip], or None."""
        return None if self.clip_attr is None else self.clip_attr.value.data

    def infer_types(self) -> Sequence[Attribute]:
        return [
            _qmatmul_gptq_shape_rule(
                self.x.type,
                self.qweight.type,
                self.scales.type,
                None if self.qzeros is None else self.qzeros.type,
                None if self.g_idx is None else self.g_idx.type,
                **_params(self),
            )
        ]


def _params(op: QMatmulGptqOp) -> dict[str, Any]:
    return {
        "bits": op.bits,
        "group_size": op.group_size,
        "sym": op.sym,
        "desc_act": op.desc_act,
        "zero_format": op.zero_format,
        "clip": op.clip,
    }


# --- shape rule -----------------------------------------------------------------------
def _expect(what: str, got: Dim, want: int, formula: str) -> None:
    if got != Dim(want):
        raise ValueError(f"{_OP}: {what} ({got}) != {formula} ({want})")


def _static(operand: str, dim_index: int, d: Dim) -> int:
    if not d.is_static:
        raise ValueError(f"{_OP}: {operand} dim {dim_index} must be static, got {d}")
    return d.value


def _check_params(k: int, n: int, *, bits: int, group_size: int, zero_format: str, clip: float | None) -> int:
    """Validates the properties against K and N; returns the number of groups G."""
    if bits not in ALLOWED_BITS:
        raise ValueError(f"{_OP}: bits must be one of {', '.join(map(str, ALLOWED_BITS))}, got {bits}")
    if zero_format not in ZERO_FORMATS:
        raise ValueError(f"{_OP}: zero_format must be one of {', '.join(ZERO_FORMATS)}, got {zero_format!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"{_OP}: clip must be > 0, got {clip}")
    # 3-bit packs 32 values into 3 words, so K comes in whole blocks of 32.
    per_block = 32 if bits == 3 else 32 // bits
    if k % per_block:
        raise ValueError(f"{_OP}: K ({k}) must be a multiple of {per_block} for bits={bits}")
    if group_size == -1:
        return 1
    if group_size <= 0 or k % group_size:
        raise ValueError(f"{_OP}: group_size ({group_size}) must be -1 or a positive divisor of K ({k})")
    return k // group_size


def _check_optional(
    qzeros: Any, g_idx: Any, *, k: int, n: int, groups: int, bits: int, sym: bool, desc_act: bool
) -> None:
    if qzeros is None and not sym:
        raise ValueError(f"{_OP}: qzeros may be absent only when sym=True (got sym=False)")
    if g_idx is None and desc_act:
        raise ValueError(f"{_OP}: desc_act=True requires g_idx")
    if qzeros is not None:
        qzeros = expect_tensor(_OP, "qzeros", qzeros)
        expect_rank(_OP, "qzeros", qzeros, 2)
        expect_dtype(_OP, "qzeros", qzeros, [DType.int32])
        if (n * bits) % 32 or (bits == 3 and n % 32):
            raise ValueError(f"{_OP}: N ({n}) cannot be packed in qzeros at bits={bits}")
        _expect("qzeros dim 0", qzeros.shape[0], groups, "G")
        _expect("qzeros dim 1", qzeros.shape[1], n * bits // 32, "N*bits/32")
    if g_idx is not None:
        g_idx = expect_tensor(_OP, "g_idx", g_idx)
        expect_rank(_OP, "g_idx", g_idx, 1)
        expect_dtype(_OP, "g_idx", g_idx, [DType.int32])
        _expect("g_idx dim 0", g_idx.shape[0], k, "K")


def _qmatmul_gptq_shape_rule(
    x: Any,
    qweight: Any,
    scales: Any,
    qzeros: Any,
    g_idx: Any,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    desc_act: bool,
    zero_format: str,
    clip: float | None,
) -> TensorType:
    x = expect_tensor(_OP, "x", x)
    qweight = expect_tensor(_OP, "qweight", qweight)
    scales = expect_tensor(_OP, "scales", scales)
    for operand, t in (("x", x), ("qweight", qweight), ("scales", scales)):
        expect_rank(_OP, operand, t, 2)
    expect_dtype(_OP, "x", x, _FLOATS)
    expect_dtype(_OP, "qweight", qweight, [DType.int32])
    expect_dtype(_OP, "scales", scales, _FLOATS)
    expect_same_device(_OP, x=x, qweight=qweight, scales=scales, qzeros=qzeros, g_idx=g_idx)
    k, n = _static("x", 1, x.shape[1]), _static("qweight", 1, qweight.shape[1])
    groups = _check_params(k, n, bits=bits, group_size=group_size, zero_format=zero_format, clip=clip)
    _expect("qweight dim 0", qweight.shape[0], k * bits // 32, "K*bits/32")
    _expect("scales dim 0", scales.shape[0], groups, "G")
    _expect("scales dim 1", scales.shape[1], n, "N")
    _check_optional(qzeros, g_idx, k=k, n=n, groups=groups, bits=bits, sym=sym, desc_act=desc_act)
    return TensorType(x.dtype, [x.shape[0], n], x.device)


# --- builder --------------------------------------------------------------------------
def qmatmul_gptq(
    x: TensorValue,
    qweight: TensorValue,
    scales: TensorValue,
    qzeros: TensorValue | None = None,
    g_idx: TensorValue | None = None,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    desc_act: bool,
    zero_format: str = "v1",
    clip: float | None = None,
) -> TensorValue:
    """`x @ W` for a GPTQ-quantized W, W[k, n] = (q[k, n] - z[g, n]) * scales[g, n], g = g_idx[k].

    Args:
        x: [M, K] float activations.
        qweight: int32 [K*bits/32, N], packed along K (AutoGPTQ layout).
        scales: f16/bf16/f32 [G, N].
        qzeros: int32 [G, N*bits/32], used whenever present; may be None only when sym
            (then z = 2**(bits-1)).
        g_idx: int32 [K], the group of each input row; None means k // group_size.
        bits: 2, 3, 4 or 8 (3 bits: K a multiple of 32, AutoGPTQ's cross-word packing).
        group_size: rows per group, -1 for one group; must divide K.
        sym: symmetric quantization.
        desc_act: act-order; requires g_idx.
        zero_format: "v1" (AutoGPTQ, qzeros stores z - 1) or "v2" (GPTQModel, stores z).
        clip: clamp the dequantized weight to [-clip, clip] (MAX's `clip_qkv` on weights).

    Returns:
        [M, N] in x's dtype.

    Example:
        >>> t = pack(w_hf, bits=4, group_size=32, sym=False)       # w_hf [64, 128]
        >>> qw = g.add_weight("q.qweight", TensorType(DType.int32, [16, 64], cpu))
        >>> s = g.add_weight("q.scales", TensorType(DType.float16, [4, 64], cpu))
        >>> qz = g.add_weight("q.qzeros", TensorType(DType.int32, [4, 8], cpu))
        >>> y = ops.qmatmul_gptq(x, qw, s, qz, bits=4, group_size=32, sym=False, desc_act=False)
    """
    props: dict[str, Attribute] = {
        "bits": IntegerAttr(bits, i64),
        "group_size": IntegerAttr(group_size, i64),
        "sym": IntegerAttr.from_bool(sym),
        "desc_act": IntegerAttr.from_bool(desc_act),
        "zero_format": StringAttr(zero_format),
    }
    if clip is not None:
        props["clip"] = FloatAttr(float(clip), Float64Type())

    def rule() -> list[TensorType]:
        zeros_type, g_idx_type = (None if v is None else v.type for v in (qzeros, g_idx))
        return [
            _qmatmul_gptq_shape_rule(
                x.type,
                qweight.type,
                scales.type,
                zeros_type,
                g_idx_type,
                bits=bits,
                group_size=group_size,
                sym=sym,
                desc_act=desc_act,
                zero_format=zero_format,
                clip=clip,
            )  # fmt: skip
        ]

    op = emit(QMatmulGptqOp, [x, qweight, scales, qzeros, g_idx], props, result_types=rule)
    return TensorValue(op.results[0])


# --- torch.library op and torch implementation ------------------------------------------
@torch.library.custom_op("fusegraph::qmatmul_gptq", mutates_args=())
def qmatmul_gptq_custom(
    x: Tensor,
    qweight: Tensor,
    scales: Tensor,
    qzeros: Tensor | None,
    g_idx: Tensor | None,
    bits: int,
    group_size: int,
    sym: bool,
    zero_format: str,
    clip: float | None,
) -> Tensor:
    """`torch.ops.fusegraph.qmatmul_gptq`: the op on tensors; the default implementation is
    the aten decomposition (device kernels may be registered on top of it)."""
    return qmatmul_decomposed(
        x, qweight, scales, qzeros, g_idx,
        bits=bits, group_size=group_size, sym=sym, zero_format=zero_format, clip=clip,
    )  # fmt: skip


@qmatmul_gptq_custom.register_fake
def _qmatmul_gptq_fake(x: Tensor, qweight: Tensor, *args: object) -> Tensor:
    return x.new_empty((x.shape[0], qweight.shape[1]))


@torch_impl(QMatmulGptqOp)
def _qmatmul_gptq_torch(
    op: QMatmulGptqOp,
    x: Tensor,
    qweight: Tensor,
    scales: Tensor,
    qzeros: Tensor | None,
    g_idx: Tensor | None,
    *,
    ctx: LoweringContext,
) -> Tensor:
    params = {k: v for k, v in _params(op).items() if k != "desc_act"}
    if ctx.mode == "custom":
        return torch.ops.fusegraph.qmatmul_gptq(x, qweight, scales, qzeros, g_idx, **params)
    return qmatmul_decomposed(x, qweight, scales, qzeros, g_idx, **params)


# --- direct FX emission (`lowering/fx_direct.py`): the functional op, as make_fx records it ---
@fx_emitter(QMatmulGptqOp)
def _qmatmul_gptq_fx(e: Any, op: QMatmulGptqOp, *tensors: Any) -> Any:
    params = {k: v for k, v in _params(op).items() if k != "desc_act"}
    return e.custom(
        op.name, torch.ops.fusegraph.qmatmul_gptq.default, *tensors, results=op.result_types, **params
    )
