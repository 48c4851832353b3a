"""`fg.qmatmul.gptq`: x @ W for a GPTQ-quantized W (AutoGPTQ/GPTQModel tensors).

The op class (its constructor and shape rule), its builder, the `fusegraph::qmatmul_gptq`
torch.library op and the torch implementation live here, with the property encoding and the
checks the three GPTQ ops share (`gptq_repack.py` has the other two); packing and the aten
math live in `gptq_packing.py` and are re-exported.

Example:
    >>> t = pack(w, bits=4, group_size=128, sym=False)          # w [N, K] float
    >>> qw = g.add_weight("q_proj.qweight", TensorType(DType.int32, [K // 8, N], cpu))
    >>> y = ops.qmatmul_gptq(x, qw, scales, qzeros, g_idx, bits=4, group_size=128,
    ...                      sym=False, desc_act=False)           # [M, N]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor
from xdsl.dialects.builtin import BoolAttr, Float64Type, FloatAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute, SSAValue
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

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
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
FLOATS = (DType.float32, DType.float16, DType.bfloat16)


# --- what the three GPTQ ops share: properties and checks ---------------------------------
class GptqFormatProps:
    """Typed accessors of the GPTQ properties an op class declares (`bits_attr`, ...), shared
    by `fg.qmatmul.gptq`, `fg.gptq.repack` and `fg.qmatmul.gptq_tiled`; `params` gives them as
    the constructor and the shape rule take them (the class's `PARAMS`, in print order)."""

    PARAMS: ClassVar[tuple[str, ...]] = ("bits", "group_size", "zero_format")
    if TYPE_CHECKING:  # declared by the op class (prop_def); xDSL refuses plain annotations
        bits_attr: IntegerAttr
        group_size_attr: IntegerAttr
        zero_format_attr: StringAttr

    @property
    def params(self) -> dict[str, Any]:
        """The properties as Python values, by name (`{"bits": 4, ...}`)."""
        return {name: getattr(self, name) for name in self.PARAMS}

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

    PARAMS: ClassVar[tuple[str, ...]] = ("bits", "group_size", "sym", "desc_act", "zero_format")
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


def gptq_props(params: Mapping[str, Any]) -> dict[str, Attribute]:
    """The properties of a GPTQ op from their Python values, in the given (print) order; an
    absent clip (None) is left out."""
    props: dict[str, Attribute] = {}
    for name, value in params.items():
        if name == "clip":
            if value is not None:
                props[name] = FloatAttr(float(value), Float64Type())
        elif name == "zero_format":
            props[name] = StringAttr(value)
        elif name in ("sym", "desc_act"):
            props[name] = IntegerAttr.from_bool(value)
        else:
            props[name] = IntegerAttr(value, i64)
    return props


def type_of(value: SSAValue | None) -> Attribute | None:
    """The type of an optional operand, or None when it is absent."""
    return None if value is None else value.type


def expect_eq(op: str, what: str, got: Dim, want: int, formula: str) -> None:
    if got != Dim(want):
        raise ValueError(f"{op}: {what} ({got}) != {formula} ({want})")


def static_dim(op: str, operand: str, index: int, d: Dim) -> int:
    if not d.is_static:
        raise ValueError(f"{op}: {operand} dim {index} must be static, got {d}")
    return d.value


def check_format(op: str, bits: int, zero_format: str) -> None:
    if bits not in ALLOWED_BITS:
        raise ValueError(f"{op}: bits must be one of {', '.join(map(str, ALLOWED_BITS))}, got {bits}")
    if zero_format not in ZERO_FORMATS:
        raise ValueError(f"{op}: zero_format must be one of {', '.join(ZERO_FORMATS)}, got {zero_format!r}")


def num_groups(k: int, group_size: int) -> int:
    return 1 if group_size == -1 else k // group_size


def check_zeros_g_idx(
    op: str, qzeros: Attribute | None, g_idx: Attribute | None, *, k: int, n: int, groups: int, bits: int,
    sym: bool, desc_act: bool,
) -> None:  # fmt: skip
    """The optional operands of `fg.qmatmul.gptq` and `fg.gptq.repack`: qzeros `[G, N*bits/32]`
    (absent only when sym) and g_idx `[K]` (required by desc_act), both int32."""
    if qzeros is None and not sym:
        raise ValueError(f"{op}: qzeros may be absent only when sym=True (got sym=False)")
    if g_idx is None and desc_act:
        raise ValueError(f"{op}: desc_act=True requires g_idx")
    if qzeros is not None:
        qzeros = expect_tensor(op, "qzeros", qzeros)
        expect_rank(op, "qzeros", qzeros, 2)
        expect_dtype(op, "qzeros", qzeros, [DType.int32])
        if (n * bits) % 32 or (bits == 3 and n % 32):
            raise ValueError(f"{op}: N ({n}) cannot be packed in qzeros at bits={bits}")
        expect_eq(op, "qzeros dim 0", qzeros.shape[0], groups, "G")
        expect_eq(op, "qzeros dim 1", qzeros.shape[1], n * bits // 32, "N*bits/32")
    if g_idx is not None:
        expect_row_vector(op, "g_idx", g_idx, k)


def expect_row_vector(op: str, operand: str, value: Attribute, k: int) -> None:
    """`operand` is an int32 `[K]` tensor: one entry per input row (g_idx, perm)."""
    t = expect_tensor(op, operand, value)
    expect_rank(op, operand, t, 1)
    expect_dtype(op, operand, t, [DType.int32])
    expect_eq(op, f"{operand} dim 0", t.shape[0], k, "K")


# --- fg.qmatmul.gptq ----------------------------------------------------------------------
@register_op
@irdl_op_definition
class QMatmulGptqOp(GptqQuantProps, FgOp):
    """`fg.qmatmul.gptq`: `x [M, K] @ dequant(qweight, scales, qzeros, g_idx) [K, N]`.

    `%y = fg.qmatmul.gptq %x, %qw, %s zeros %qz g_idx %g {bits = 4 : i64, ...} : ...`;
    `zeros` and `g_idx` are optional (absent qzeros needs sym; absent g_idx means
    k // group_size). The arguments are those of `qmatmul_gptq`.

    Example:
        >>> op = QMatmulGptqOp(x, qw, s, qz, bits=4, group_size=32, sym=False, desc_act=False)
    """

    name = "fg.qmatmul.gptq"
    PARAMS: ClassVar[tuple[str, ...]] = ("bits", "group_size", "sym", "desc_act", "zero_format", "clip")
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

    def __init__(
        self, x: Operand, qweight: Operand, scales: Operand, qzeros: Operand | None = None,
        g_idx: Operand | None = None, *, bits: int, group_size: int, sym: bool, desc_act: bool,
        zero_format: str = "v1", clip: float | None = None,
    ) -> None:  # fmt: skip
        params: dict[str, Any] = dict(bits=bits, group_size=group_size, sym=sym, desc_act=desc_act,
                                      zero_format=zero_format, clip=clip)  # fmt: skip
        operands = [x, qweight, scales, qzeros, g_idx]
        super().__init__(operands, gptq_props(params), rule=partial(self.rule, **params))

    @property
    def clip(self) -> float | None:
        """Clamp of the dequantized weight to [-clip, clip], or None."""
        return None if self.clip_attr is None else self.clip_attr.value.data

    def infer_types(self) -> Sequence[Attribute]:
        types = (self.x.type, self.qweight.type, self.scales.type, type_of(self.qzeros))
        return self.rule(*types, type_of(self.g_idx), **self.params)

    @staticmethod
    def rule(
        x: Attribute, qweight: Attribute, scales: Attribute, qzeros: Attribute | None, g_idx: Attribute | None,
        *, bits: int, group_size: int, sym: bool, desc_act: bool, zero_format: str, clip: float | None,
    ) -> list[Attribute]:  # fmt: skip
        """The shape rule: x `[M, K]` float, qweight int32 `[K*bits/32, N]`, scales `[G, N]`
        (+ `check_zeros_g_idx`); K and N static; the result is `[M, N]` of x's dtype."""
        x = expect_tensor(_OP, "x", x)
        qweight = expect_tensor(_OP, "qweight", qweight)
        scales = expect_tensor(_OP, "scales", scales)
        for operand, t in (("x", x), ("qweight", qweight), ("scales", scales)):
            expect_rank(_OP, operand, t, 2)
        expect_dtype(_OP, "x", x, FLOATS)
        expect_dtype(_OP, "qweight", qweight, [DType.int32])
        expect_dtype(_OP, "scales", scales, FLOATS)
        expect_same_device(
            _OP, x=x, qweight=qweight, scales=scales,
            qzeros=qzeros if isinstance(qzeros, TensorType) else None,
            g_idx=g_idx if isinstance(g_idx, TensorType) else None,
        )  # fmt: skip
        k, n = static_dim(_OP, "x", 1, x.shape[1]), static_dim(_OP, "qweight", 1, qweight.shape[1])
        check_format(_OP, bits, zero_format)
        if clip is not None and not clip > 0:
            raise ValueError(f"{_OP}: clip must be > 0, got {clip}")
        # 3-bit packs 32 values into 3 words, so K comes in whole blocks of 32.
        per_block = 32 if bits == 3 else 32 // bits
        if k % per_block:
            raise ValueError(f"{_OP}: K ({k}) must be a multiple of {per_block} for bits={bits}")
        if group_size != -1 and (group_size <= 0 or k % group_size):
            raise ValueError(f"{_OP}: group_size ({group_size}) must be -1 or a positive divisor of K ({k})")
        groups = num_groups(k, group_size)
        expect_eq(_OP, "qweight dim 0", qweight.shape[0], k * bits // 32, "K*bits/32")
        expect_eq(_OP, "scales dim 0", scales.shape[0], groups, "G")
        expect_eq(_OP, "scales dim 1", scales.shape[1], n, "N")
        check_zeros_g_idx(_OP, qzeros, g_idx, k=k, n=n, groups=groups, bits=bits, sym=sym, desc_act=desc_act)
        return [TensorType(x.dtype, [x.shape[0], n], x.device)]


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
    op = QMatmulGptqOp(x, qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym,
                       desc_act=desc_act, zero_format=zero_format, clip=clip)  # fmt: skip
    return emit_tensor(op)


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
    params = {k: v for k, v in op.params.items() if k != "desc_act"}
    if ctx.mode == "custom":
        y: Tensor = torch.ops.fusegraph.qmatmul_gptq(x, qweight, scales, qzeros, g_idx, **params)
        return y
    return qmatmul_decomposed(x, qweight, scales, qzeros, g_idx, **params)
