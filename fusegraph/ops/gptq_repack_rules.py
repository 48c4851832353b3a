"""Shape rules of `fg.gptq.repack` and `fg.qmatmul.gptq_tiled` (`ops/gptq_repack.py`), shared with
the pass `gptq-repack`: each names the op, the operand and the dims it checks."""

from __future__ import annotations

from typing import Any

from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import TensorType
from fusegraph.ops._common import expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops.gptq_layout import NB, container_bits, layout_error
from fusegraph.ops.gptq_packing import ALLOWED_BITS, ZERO_FORMATS

_REPACK = "fg.gptq.repack"
_TILED = "fg.qmatmul.gptq_tiled"
_FLOATS = (DType.float32, DType.float16, DType.bfloat16)


def check_common(op: str, bits: int, zero_format: str) -> None:
    if bits not in ALLOWED_BITS:
        raise ValueError(f"{op}: bits must be one of {', '.join(map(str, ALLOWED_BITS))}, got {bits}")
    if zero_format not in ZERO_FORMATS:
        raise ValueError(f"{op}: zero_format must be one of {', '.join(ZERO_FORMATS)}, got {zero_format!r}")


def _static(op: str, operand: str, index: int, d: Dim) -> int:
    if not d.is_static:
        raise ValueError(f"{op}: {operand} dim {index} must be static, got {d}")
    return d.value


def _expect(op: str, what: str, got: Dim, want: int, formula: str) -> None:
    if got != Dim(want):
        raise ValueError(f"{op}: {what} ({got}) != {formula} ({want})")


def num_groups(k: int, group_size: int) -> int:
    return 1 if group_size == -1 else k // group_size


def repack_shape_rule(
    qweight: Any, qzeros: Any, g_idx: Any, *, bits: int, group_size: int, sym: bool, desc_act: bool,
    zero_format: str,
) -> list[TensorType]:  # fmt: skip
    op = _REPACK
    check_common(op, bits, zero_format)
    qweight = expect_tensor(op, "qweight", qweight)
    expect_rank(op, "qweight", qweight, 2)
    expect_dtype(op, "qweight", qweight, [DType.int32])
    expect_same_device(op, qweight=qweight, qzeros=qzeros, g_idx=g_idx)
    rows, n = _static(op, "qweight", 0, qweight.shape[0]), _static(op, "qweight", 1, qweight.shape[1])
    k = rows * 32 // bits
    if (why := layout_error(k, n, group_size)) is not None:
        raise ValueError(f"{op}: {why}")
    groups = num_groups(k, group_size)
    if qzeros is None and not sym:
        raise ValueError(f"{op}: qzeros may be absent only when sym=True (got sym=False)")
    if desc_act and g_idx is None:
        raise ValueError(f"{op}: desc_act=True requires g_idx")
    if qzeros is not None:
        qzeros = expect_tensor(op, "qzeros", qzeros)
        expect_rank(op, "qzeros", qzeros, 2)
        expect_dtype(op, "qzeros", qzeros, [DType.int32])
        _expect(op, "qzeros dim 0", qzeros.shape[0], groups, "G")
        _expect(op, "qzeros dim 1", qzeros.shape[1], n * bits // 32, "N*bits/32")
    if g_idx is not None:
        g_idx = expect_tensor(op, "g_idx", g_idx)
        expect_rank(op, "g_idx", g_idx, 1)
        expect_dtype(op, "g_idx", g_idx, [DType.int32])
        _expect(op, "g_idx dim 0", g_idx.shape[0], k, "K")
    cb = container_bits(bits)
    out = [
        TensorType(DType.int32, [n // NB, k * cb // 32, NB], qweight.device),
        TensorType(DType.int32, [groups, n * cb // 32], qweight.device),
    ]
    if desc_act:
        out.append(TensorType(DType.int32, [k], qweight.device))
    return out


def repack_props(
    bits: int, group_size: int, sym: bool, desc_act: bool, zero_format: str
) -> dict[str, Attribute]:
    return {
        "bits": IntegerAttr(bits, i64),
        "group_size": IntegerAttr(group_size, i64),
        "sym": IntegerAttr.from_bool(sym),
        "desc_act": IntegerAttr.from_bool(desc_act),
        "zero_format": StringAttr(zero_format),
    }


def tiled_shape_rule(
    x: Any,
    qweight_t: Any,
    scales: Any,
    qzeros_t: Any,
    perm: Any,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
) -> TensorType:
    op = _TILED
    check_common(op, bits, zero_format)
    x, qweight_t = expect_tensor(op, "x", x), expect_tensor(op, "qweight_t", qweight_t)
    scales, qzeros_t = expect_tensor(op, "scales", scales), expect_tensor(op, "qzeros_t", qzeros_t)
    for name, t, rank in (
        ("x", x, 2),
        ("qweight_t", qweight_t, 3),
        ("scales", scales, 2),
        ("qzeros_t", qzeros_t, 2),
    ):
        expect_rank(op, name, t, rank)
    expect_dtype(op, "x", x, _FLOATS)
    expect_dtype(op, "scales", scales, _FLOATS)
    expect_dtype(op, "qweight_t", qweight_t, [DType.int32])
    expect_dtype(op, "qzeros_t", qzeros_t, [DType.int32])
    expect_same_device(op, x=x, qweight_t=qweight_t, scales=scales, qzeros_t=qzeros_t, perm=perm)
    k = _static(op, "x", 1, x.shape[1])
    n = _static(op, "qweight_t", 0, qweight_t.shape[0]) * NB
    if (why := layout_error(k, n, group_size)) is not None:
        raise ValueError(f"{op}: {why}")
    cb = container_bits(bits)
    groups = num_groups(k, group_size)
    _expect(op, "qweight_t dim 1", qweight_t.shape[1], k * cb // 32, "K*CB/32")
    _expect(op, "qweight_t dim 2", qweight_t.shape[2], NB, "64")
    _expect(op, "scales dim 0", scales.shape[0], groups, "G")
    _expect(op, "scales dim 1", scales.shape[1], n, "N")
    _expect(op, "qzeros_t dim 0", qzeros_t.shape[0], groups, "G")
    _expect(op, "qzeros_t dim 1", qzeros_t.shape[1], n * cb // 32, "N*CB/32")
    if perm is not None:
        perm = expect_tensor(op, "perm", perm)
        expect_rank(op, "perm", perm, 1)
        expect_dtype(op, "perm", perm, [DType.int32])
        _expect(op, "perm dim 0", perm.shape[0], k, "K")
    return TensorType(x.dtype, [x.shape[0], n], x.device)
