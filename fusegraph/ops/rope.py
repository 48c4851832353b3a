"""`fg.rope`: rotary position embedding over a ragged batch.

Row `t` of sequence `b` sits at position `p = start_pos[b] + (t - input_row_offsets[b])` and
is rotated by row `p` of `freqs_cis [max_pos, D]`, which holds
`[cos θ0·p, sin θ0·p, cos θ1·p, sin θ1·p, …]`. `interleaved=True` pairs dims
`(x[2i], x[2i+1])` (GPT-J); `interleaved=False` pairs `(x[i], x[i + D/2])` (NeoX / HF).

torch.library op (stable; kernels may be registered for it):
    `fusegraph::rope(Tensor x, Tensor input_row_offsets, Tensor start_pos, Tensor freqs_cis,
    bool interleaved) -> Tensor` (pure; metadata uint32 or any integer dtype).

Example:
    >>> q = ops.rope(q, row_offsets, cache_lengths, freqs_cis, interleaved=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from xdsl.dialects.builtin import BoolAttr, IntegerAttr
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.opbase import FgOp, emit, register_op
from fusegraph.compiler.registry import LoweringContext, fx_emitter, torch_impl
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops._ragged import as_index, check_even_head_dim, check_freqs, check_metadata, token_positions


@register_op
@irdl_op_definition
class RopeOp(FgOp):
    """`%y = fg.rope %x, %row_offsets, %start_pos, %freqs_cis {interleaved = false} : ... -> ...`"""

    name = "fg.rope"
    x = operand_def(TensorType)
    input_row_offsets = operand_def(TensorType)
    start_pos = operand_def(TensorType)
    freqs_cis = operand_def(TensorType)
    interleaved_attr = prop_def(BoolAttr, prop_name="interleaved")
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$x `,` $input_row_offsets `,` $start_pos `,` $freqs_cis attr-dict `:` "
        "type($x) `,` type($input_row_offsets) `,` type($start_pos) `,` type($freqs_cis) `->` type($result)"
    )

    @property
    def interleaved(self) -> bool:
        """Whether adjacent dims pair up (GPT-J) rather than the two halves (NeoX)."""
        return bool(self.interleaved_attr.value.data)

    def infer_types(self) -> Sequence[Attribute]:
        return [
            _rope_shape_rule(
                self.x.type, self.input_row_offsets.type, self.start_pos.type, self.freqs_cis.type
            )
        ]


def _rope_shape_rule(x: Any, row_offsets: Any, start_pos: Any, freqs_cis: Any) -> TensorType:
    op = "fg.rope"
    x = expect_tensor(op, "x", x)
    expect_rank(op, "x", x, 3)
    expect_dtype(op, "x", x, [DType.float32, DType.float16, DType.bfloat16])
    check_even_head_dim(op, x.shape[2])
    check_metadata(op, row_offsets, start_pos, lengths_name="start_pos")
    f = check_freqs(op, freqs_cis, x.shape[2])
    expect_same_device(op, x=x, input_row_offsets=row_offsets, start_pos=start_pos, freqs_cis=f)
    return x


def rope(
    x: TensorValue,
    input_row_offsets: TensorValue,
    start_pos: TensorValue,
    freqs_cis: TensorValue,
    *,
    interleaved: bool,
) -> TensorValue:
    """Rotate `x [T, H, D]` by the rows of `freqs_cis` at each token's position.

    Args:
        x: activations `[total_seq_len, n_heads, head_dim]`; head_dim even.
        input_row_offsets: uint32 `[B+1]`, the ragged row offsets.
        start_pos: uint32 `[B]`, the tokens already cached per sequence (cache lengths).
        freqs_cis: float `[max_pos, head_dim]`, `[cos θ0·p, sin θ0·p, …]` per row.
        interleaved: pair adjacent dims (True) or the two halves (False).

    Returns:
        The rotated tensor, same type as `x`.

    Example:
        >>> with Graph("g", input_types=[...]) as g:
        ...     x, ro, lens, freqs = g.inputs
        ...     y = ops.rope(x, ro, lens, freqs, interleaved=True)
    """
    operands = [x, input_row_offsets, start_pos, freqs_cis]
    props = {"interleaved": IntegerAttr.from_bool(bool(interleaved))}
    op = emit(RopeOp, operands, props, result_types=lambda: [_rope_shape_rule(*(v.type for v in operands))])
    return TensorValue(op.results[0])


# --- torch ----------------------------------------------------------------------------
def apply_rotary(x: torch.Tensor, freqs: torch.Tensor, *, interleaved: bool) -> torch.Tensor:
    """Rotate `x [T, H, D]` by per-row `freqs [T, D]` (cos/sin interleaved), in float32."""
    t, h, d = x.shape
    f = freqs.to(torch.float32).reshape(t, 1, d // 2, 2)
    cos, sin = f[..., 0], f[..., 1]
    xf = x.to(torch.float32)
    if interleaved:
        pairs = xf.reshape(t, h, d // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(t, h, d)
    else:
        a, b = xf[..., : d // 2], xf[..., d // 2 :]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    return out.to(x.dtype)


def rope_decomposed(
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    interleaved: bool,
) -> torch.Tensor:
    """The aten decomposition of `fg.rope` (IREE-friendly: 1-D index_select only)."""
    _, pos = token_positions(as_index(input_row_offsets), as_index(start_pos), x.shape[0])
    return apply_rotary(x, freqs_cis.index_select(0, pos), interleaved=interleaved)


@torch.library.custom_op("fusegraph::rope", mutates_args=())
def _rope_custom(
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    interleaved: bool,
) -> torch.Tensor:
    return rope_decomposed(x, input_row_offsets, start_pos, freqs_cis, interleaved)


@_rope_custom.register_fake
def _rope_fake(
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    interleaved: bool,
) -> torch.Tensor:
    return torch.empty_like(x)


@torch_impl(RopeOp)
def _rope_torch(
    op: RopeOp,
    x: torch.Tensor,
    row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    *,
    ctx: LoweringContext,
) -> torch.Tensor:
    if ctx.mode == "custom":
        return torch.ops.fusegraph.rope(x, row_offsets, start_pos, freqs_cis, op.interleaved)
    return rope_decomposed(x, row_offsets, start_pos, freqs_cis, op.interleaved)


# --- direct FX emission (`lowering/fx_direct.py`): the functional op, as make_fx records it ---
@fx_emitter(RopeOp)
def _rope_fx(e: Any, op: RopeOp, *tensors: Any) -> Any:
    return e.custom(
        op.name, torch.ops.fusegraph.rope.default, *tensors, op.interleaved, results=op.result_types
    )
