"""Normalizations: `fg.rms_norm` (over the last dim, with a `[D]` weight) and `fg.softmax`.

Both compute in float32 and return the input dtype, so bf16/f16 graphs keep precision in
the reduction (as HF Llama and MAX do).

Example:
    >>> h = ops.rms_norm(x, g.add_weight("norm.weight", TensorType(DType.float32, [64])), 1e-6)
    >>> hp = ops.rms_norm(x, w, 1e-6, perm=perm)  # perm int32 [64]: hp[:, j] == h[:, perm[j]]
    >>> p = ops.softmax(scores, axis=-1)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr, IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import (
    expect_dim,
    expect_dtype,
    expect_rank,
    expect_same_device,
    expect_tensor,
    normalize_axis,
)
from fusegraph.ops._ragged import is_tracing

_RMS = "fg.rms_norm"


# --- rms_norm -------------------------------------------------------------------------
@register_op
@irdl_op_definition
class RmsNormOp(FgOp):
    """`fg.rms_norm {eps = 1e-06 : f64}`: `x / sqrt(mean(x**2, -1) + eps) * weight`.

    With the optional `perm` operand (int32 `[D]`, D = x's last dim, static) the result's
    last dim is permuted: `y[..., j] = norm(x)[..., perm[j]]` (an act-order GEMM's input,
    emitted by its producer instead of by a separate permute kernel).

    Example:
        >>> op = RmsNormOp(x, w, perm, eps=1e-6)  # %y = fg.rms_norm %x, %w perm %p {eps = ...}
    """

    name = "fg.rms_norm"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    perm = opt_operand_def(TensorType)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $weight (`perm` $perm^)? attr-dict `:` type($input) `,` type($weight) "
        "(`perm` type($perm)^)? `->` type($result)"
    )

    def __init__(self, input: Operand, weight: Operand, perm: Operand | None = None, *, eps: float) -> None:
        props = {"eps": FloatAttr(float(eps), Float64Type())}
        super().__init__([input, weight, perm], props, rule=partial(self.rule, eps=eps))

    def infer_types(self) -> Sequence[Attribute]:
        perm = None if self.perm is None else self.perm.type
        return self.rule(self.input.type, self.weight.type, perm, eps=self.eps.value.data)

    @staticmethod
    def rule(x: Any, weight: Any, perm: Any = None, *, eps: float) -> list[Attribute]:
        """The shape rule: `x` keeps its type; `weight` is `[x.shape[-1]]` of x's dtype;
        `perm`, when present, is int32 `[x.shape[-1]]` with that dim static."""
        return [norm_operands(_RMS, x, weight, perm, eps)]


def norm_operands(op: str, x: Any, weight: Any, perm: Any, eps: float, x_name: str = "input") -> TensorType:
    """The shape rule of an RMSNorm's operands (x float, weight `[D]` of x's dtype, perm int32
    `[D]` with D static, eps >= 0), errors naming `op`; x's type."""
    x_t = expect_tensor(op, x_name, x)
    weight = expect_tensor(op, "weight", weight)
    perm = None if perm is None else expect_tensor(op, "perm", perm)
    x = x_t
    expect_same_device(op, **{x_name: x_t, "weight": weight, "perm": perm})
    if not x.dtype.is_float:
        raise ValueError(f"{op}: {x_name} dtype must be a float type, got {x.dtype.name}")
    if x.rank < 1:
        raise ValueError(f"{op}: {x_name} must have rank >= 1, got a scalar")
    expect_rank(op, "weight", weight, 1)
    if weight.dtype != x.dtype:
        raise ValueError(f"{op}: weight dtype {weight.dtype.name} != {x_name} dtype {x.dtype.name}")
    expect_dim(op, "weight dim 0", weight.shape[0], x.shape[-1])
    if perm is not None:
        expect_rank(op, "perm", perm, 1)
        expect_dtype(op, "perm", perm, [DType.int32])
        if not x.shape[-1].is_static:
            raise ValueError(f"{op}: perm needs a static {x_name} dim -1, got {x.shape[-1]}")
        expect_dim(op, "perm dim 0", perm.shape[0], x.shape[-1])
    if not eps >= 0.0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps=}")
    return x_t


def rms_norm(
    x: TensorValue, weight: TensorValue, eps: float = 1e-6, perm: TensorValue | None = None
) -> TensorValue:
    """RMS-normalize the last dim of `x` and scale by `weight` (`[D]`, x's dtype).

    Args:
        x: `[..., D]` float.
        weight: `[D]`, x's dtype.
        eps: added to the mean of squares, >= 0.
        perm: optional int32 `[D]` (D static): the result's last dim is `perm`-gathered,
            `y[..., j] = norm(x)[..., perm[j]]`.

    Returns:
        x's type.

    Example:
        >>> y = ops.rms_norm(x, w, eps=1e-6)     # x [T, 64], w [64] -> [T, 64]
        >>> yp = ops.rms_norm(x, w, 1e-6, perm)  # yp[:, j] == y[:, perm[j]]
    """
    return emit_tensor(RmsNormOp(x, weight, perm, eps=eps))


def rms_norm_math(
    x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """The aten math of `fg.rms_norm`: fp32 compute, x's dtype out, then the perm gather."""
    xf = x.to(torch.float32)
    normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    y = (normed * weight.to(torch.float32)).to(x.dtype)
    return y if perm is None else y.index_select(-1, perm)


_PERM_CHECKED: dict[int, tuple[int, int]] = {}


def perm_checked(perm: torch.Tensor) -> bool:
    """Whether `check_perm` has read these very values (not written since).

    Example:
        >>> p = torch.tensor([1, 0], dtype=torch.int32)
        >>> perm_checked(p), check_perm(p, 2), perm_checked(p)
        (False, None, True)
    """
    stamp = _PERM_CHECKED.get(id(perm))
    return stamp is not None and stamp == (perm.data_ptr(), perm._version)


def check_perm(perm: torch.Tensor, d: int, op: str = _RMS) -> None:
    """A ValueError naming `op` and the first bad entry unless `perm` holds each of 0..d-1 once.

    Each tensor is read once (one host sync on a GPU) and again only after it is written (its
    `_version` moves); nothing is read under tracing or CUDA-graph capture, where values cannot
    be read (the eager runtime runs every op once before it captures). The CUDA kernel also
    masks an out-of-range entry, so an unchecked one never reads out of bounds.

    Example:
        >>> check_perm(torch.tensor([2, 0, 1], dtype=torch.int32), 3)  # passes
    """
    if perm_checked(perm) or is_tracing(perm):  # only real tensors are recorded, so look first
        return
    first_at: dict[int, int] = {}
    for j, v in enumerate(perm.reshape(-1).tolist()):
        if not 0 <= v < d:
            raise ValueError(f"{op}: perm must be a permutation of 0..{d - 1}, got perm[{j}] = {v}")
        if (i := first_at.setdefault(v, j)) != j:
            raise ValueError(
                f"{op}: perm must be a permutation of 0..{d - 1}, got perm[{i}] = perm[{j}] = {v}"
            )
    key = id(perm)
    if key not in _PERM_CHECKED:  # an entry goes with its tensor (a freed one's id can be reused)
        weakref.finalize(perm, _PERM_CHECKED.pop, key, None)
    _PERM_CHECKED[key] = (perm.data_ptr(), perm._version)


@torch.library.custom_op("fusegraph::rms_norm", mutates_args=())
def rms_norm_custom(
    x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """`torch.ops.fusegraph.rms_norm`: the aten math by default; the Triton kernel
    (`runtime/kernels/rms_norm.py`) is registered on top for CUDA."""
    if perm is not None:
        check_perm(perm, x.shape[-1])
    return rms_norm_math(x, weight, perm, eps).contiguous()


@rms_norm_custom.register_fake
def _rms_norm_fake(
    x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> torch.Tensor:
    return x.new_empty(x.shape)


@torch_impl(RmsNormOp)
def _rms_norm_torch(
    op: RmsNormOp, x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, *, ctx: LoweringContext
) -> torch.Tensor:
    if perm is not None:
        check_perm(perm, x.shape[-1])
    # The custom op exists for its CUDA kernel, so only a CUDA run calls it: lowerings
    # (to_torch_mlir, IREE) and CPU runs keep the aten math, which every backend compiles.
    if ctx.mode == "custom" and torch.device(ctx.device).type == "cuda":
        y: torch.Tensor = torch.ops.fusegraph.rms_norm(x, weight, perm, op.eps.value.data)
        return y
    return rms_norm_math(x, weight, perm, op.eps.value.data)


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
