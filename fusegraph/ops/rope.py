"""`fg.rope`: rotary position embedding over a ragged batch.

Row `t` of sequence `b` sits at position `p = start_pos[b] + (t - input_row_offsets[b])` and
is rotated by row `p` of `freqs_cis [max_pos, R]`, which holds
`[cos θ0·p, sin θ0·p, cos θ1·p, sin θ1·p, …]`. Only the first R ≤ D features rotate
(partial rotary); the rest pass through. `interleaved=True` pairs dims `(x[2i], x[2i+1])`
(GPT-J); `interleaved=False` pairs `(x[i], x[i + R/2])` (NeoX / HF). The optional
`long_after` (longrope: a second, long-factor table stacked under the first) and
`ntk_theta` / `ntk_factor` / `ntk_original_max` (dynamic NTK) properties make the angles
depend on each sequence's length after the step: see `ops/_rope_math.py`.

torch.library op (stable; kernels may be registered for it):
    `fusegraph::rope(Tensor x, Tensor input_row_offsets, Tensor start_pos, Tensor freqs_cis,
    bool interleaved, int? long_after=None, float[]? ntk=None) -> Tensor` (pure; metadata
    uint32 or any integer dtype; ntk = [theta, factor, original_max]).

Example:
    >>> q = ops.rope(q, row_offsets, cache_lengths, freqs_cis, interleaved=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from xdsl.dialects.builtin import BoolAttr, FloatAttr, IntegerAttr
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.effects import RaggedOperands
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops._ragged import as_index, check_even_head_dim, check_metadata, token_positions
from fusegraph.ops._rope_math import RopeVariant, apply_rotary, token_freqs

__all__ = ["RopeOp", "RopeVariant", "apply_rotary", "check_rope_freqs", "rope", "rope_decomposed"]


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
    long_after_attr = opt_prop_def(IntegerAttr, prop_name="long_after")
    ntk_theta_attr = opt_prop_def(FloatAttr, prop_name="ntk_theta")
    ntk_factor_attr = opt_prop_def(FloatAttr, prop_name="ntk_factor")
    ntk_original_max_attr = opt_prop_def(IntegerAttr, prop_name="ntk_original_max")
    result = result_def(TensorType)
    traits = traits_def(
        Pure(),
        RaggedOperands(rows="x", row_offsets="input_row_offsets", lengths="start_pos", freqs_cis="freqs_cis"),
    )
    assembly_format = (
        "$x `,` $input_row_offsets `,` $start_pos `,` $freqs_cis attr-dict `:` "
        "type($x) `,` type($input_row_offsets) `,` type($start_pos) `,` type($freqs_cis) `->` type($result)"
    )

    def __init__(
        self,
        x: Operand,
        input_row_offsets: Operand,
        start_pos: Operand,
        freqs_cis: Operand,
        *,
        interleaved: bool,
        variant: RopeVariant | None = None,
    ) -> None:
        variant = variant if variant is not None else RopeVariant()
        props = {"interleaved": IntegerAttr.from_bool(bool(interleaved)), **variant.props()}
        operands = [x, input_row_offsets, start_pos, freqs_cis]
        super().__init__(operands, props, rule=partial(self.rule, variant=variant))

    @property
    def interleaved(self) -> bool:
        """Whether adjacent dims pair up (GPT-J) rather than the two halves (NeoX)."""
        return bool(self.interleaved_attr.value.data)

    @property
    def variant(self) -> RopeVariant:
        """The length-dependent scaling (longrope / dynamic NTK), if any."""
        return RopeVariant.of(self)

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(*(v.type for v in self.operands), variant=self.variant)

    @staticmethod
    def rule(
        x: Attribute,
        row_offsets: Attribute,
        start_pos: Attribute,
        freqs_cis: Attribute,
        *,
        variant: RopeVariant,
    ) -> list[Attribute]:
        """The shape rule: the result is x's type; x is a float `[T, H, D]` with D even, and
        freqs_cis fits D and the variant (`check_rope_freqs`)."""
        op = "fg.rope"
        xt = expect_tensor(op, "x", x)
        expect_rank(op, "x", xt, 3)
        expect_dtype(op, "x", xt, [DType.float32, DType.float16, DType.bfloat16])
        check_even_head_dim(op, xt.shape[2])
        ro, pos, _ = check_metadata(op, row_offsets, start_pos, lengths_name="start_pos")
        f = check_rope_freqs(op, freqs_cis, xt.shape[2], variant)
        expect_same_device(op, x=xt, input_row_offsets=ro, start_pos=pos, freqs_cis=f)
        return [xt]


def check_rope_freqs(op: str, freqs_cis: Attribute, head_dim: Dim, variant: RopeVariant) -> TensorType:
    """Check `freqs_cis [V·P, R]` (float): R even, 2 <= R <= head_dim (partial rotary when
    smaller), V·P divisible by V (two stacked tables for longrope), R > 2 for dynamic NTK."""
    f = expect_tensor(op, "freqs_cis", freqs_cis)
    expect_rank(op, "freqs_cis", f, 2)
    expect_dtype(op, "freqs_cis", f, [DType.float32, DType.float16, DType.bfloat16])
    r = f.shape[1]
    if not r.is_static:
        raise ValueError(f"{op}: freqs_cis dim 1 (the rotary width) must be static, got {r}")
    if r.value % 2 or r.value < 2 or (head_dim.is_static and r.value > head_dim.value):
        raise ValueError(
            f"{op}: freqs_cis dim 1 (the rotary width, {r}) must be even and in [2, head dim ({head_dim})]"
        )
    if variant.ntk is not None and r.value < 4:
        raise ValueError(f"{op}: dynamic NTK needs a rotary width >= 4 (R/(R-2)), got {r}")
    rows = f.shape[0]
    if variant.tables == 2 and rows.is_static and rows.value % 2:
        raise ValueError(f"{op}: with long_after, freqs_cis stacks two tables: dim 0 ({rows}) must be even")
    return f


def rope(
    x: TensorValue,
    input_row_offsets: TensorValue,
    start_pos: TensorValue,
    freqs_cis: TensorValue,
    *,
    interleaved: bool,
    variant: RopeVariant | None = None,
) -> TensorValue:
    """Rotate `x [T, H, D]` by the rows of `freqs_cis` at each token's position.

    Args:
        x: activations `[total_seq_len, n_heads, head_dim]`; head_dim even.
        input_row_offsets: uint32 `[B+1]`, the ragged row offsets.
        start_pos: uint32 `[B]`, the tokens already cached per sequence (cache lengths).
        freqs_cis: float `[max_pos, R]`, `[cos θ0·p, sin θ0·p, …]` per row; R <= head_dim
            (only the first R features rotate); `[2·max_pos, R]` with `variant.long_after`.
        interleaved: pair adjacent dims (True) or the two halves of the rotary part (False).
        variant: longrope / dynamic NTK selection by sequence length (`RopeVariant`).

    Returns:
        The rotated tensor, same type as `x`.

    Example:
        >>> with Graph("g", input_types=[...]) as g:
        ...     x, ro, lens, freqs = g.inputs
        ...     y = ops.rope(x, ro, lens, freqs, interleaved=True)
    """
    return emit_tensor(
        RopeOp(x, input_row_offsets, start_pos, freqs_cis, interleaved=interleaved, variant=variant)
    )


# --- torch ----------------------------------------------------------------------------
def rope_decomposed(
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    interleaved: bool,
    long_after: int | None = None,
    ntk: list[float] | None = None,
) -> torch.Tensor:
    """The aten decomposition of `fg.rope` (IREE-friendly: 1-D index_select only)."""
    ro, lens = as_index(input_row_offsets), as_index(start_pos)
    batch, pos = token_positions(ro, lens, x.shape[0])
    freqs = token_freqs(freqs_cis, batch, pos, ro, lens, RopeVariant.from_schema(long_after, ntk))
    return apply_rotary(x, freqs, interleaved=interleaved)


@torch.library.custom_op("fusegraph::rope", mutates_args=())
def _rope_custom(
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    interleaved: bool,
    long_after: int | None = None,
    ntk: list[float] | None = None,
) -> torch.Tensor:
    return rope_decomposed(x, input_row_offsets, start_pos, freqs_cis, interleaved, long_after, ntk)


@_rope_custom.register_fake
def _rope_fake(
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    start_pos: torch.Tensor,
    freqs_cis: torch.Tensor,
    interleaved: bool,
    long_after: int | None = None,
    ntk: list[float] | None = None,
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
    args = (x, row_offsets, start_pos, freqs_cis, op.interleaved, *op.variant.schema_args())
    if ctx.mode == "custom":
        out: torch.Tensor = torch.ops.fusegraph.rope(*args)
        return out
    return rope_decomposed(*args)
