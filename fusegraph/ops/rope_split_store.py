"""`fg.rope_split_store`: the fused op that `fuse-rope-split-store` produces.

Semantics: exactly the unfused chain `UnfusedChain.build` constructs
(`ops/rope_split_store_chain.py`): split qkv into q, k, v `[T, heads, D]`, rope q and k
(as `fg.rope`, variants included), store k then v; results q `[T, H·D]` and the next kv_blocks.
It is built as a custom op is: a shape rule, a torch implementation (also its reference and
decomposition) and torch.library ops that device kernels can override.

torch.library ops (stable; the Triton CUDA kernel is registered for the in-place form), their
arguments those of `rope_split_store_decomposed` (the tensors, then layer_idx, interleaved,
n_heads, n_kv_heads, head_dim, `int? long_after=None, float[]? ntk=None`):
`fusegraph::rope_split_store(...) -> (Tensor, Tensor)` (functional: q and the new kv_blocks) and
`fusegraph::rope_split_store_(..., Tensor(a!) kv_blocks, ...) -> Tensor` (in place; returns q).
Both refuse, before writing, positions outside a sequence's pages.

Example:
    >>> q, kv = ops.rope_split_store(qkv, ro, freqs, kv, lens, lookup, layer_idx=0,
    ...                              interleaved=False, n_heads=4, n_kv_heads=2, head_dim=16)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from xdsl.dialects.builtin import BoolAttr, FloatAttr, IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def, result_def, traits_def

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.effects import RaggedOperands, WritesBuffer
from fusegraph.compiler.graph import emit
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.compiler.values import BufferValue, TensorValue
from fusegraph.ops._common import expect_rank, expect_same_device, expect_tensor
from fusegraph.ops._ragged import (
    as_index,
    cache_rows,
    check_even_head_dim,
    check_kv_blocks,
    check_metadata,
    check_store_capacity,
    token_positions,
    write_rows,
)
from fusegraph.ops._rope_math import RopeVariant, apply_rotary, token_freqs
from fusegraph.ops.rope import check_rope_freqs

_OP = "fg.rope_split_store"


@register_op
@irdl_op_definition
class RopeSplitStoreOp(FgOp):
    """`%q, %kv1 = fg.rope_split_store %qkv, %ro, %freqs, %kv0, %lens, %lookup {layer_idx = 0, ...}`"""

    name = _OP
    qkv = operand_def(TensorType)
    input_row_offsets = operand_def(TensorType)
    freqs_cis = operand_def(TensorType)
    kv_blocks = operand_def(BufferType)
    cache_lengths = operand_def(TensorType)
    lookup_table = operand_def(TensorType)
    layer_idx_attr = prop_def(IntegerAttr, prop_name="layer_idx")
    interleaved_attr = prop_def(BoolAttr, prop_name="interleaved")
    n_heads_attr = prop_def(IntegerAttr, prop_name="n_heads")
    n_kv_heads_attr = prop_def(IntegerAttr, prop_name="n_kv_heads")
    head_dim_attr = prop_def(IntegerAttr, prop_name="head_dim")
    long_after_attr = opt_prop_def(IntegerAttr, prop_name="long_after")
    ntk_theta_attr = opt_prop_def(FloatAttr, prop_name="ntk_theta")
    ntk_factor_attr = opt_prop_def(FloatAttr, prop_name="ntk_factor")
    ntk_original_max_attr = opt_prop_def(IntegerAttr, prop_name="ntk_original_max")
    q_out = result_def(TensorType)
    kv_out = result_def(BufferType)
    traits = traits_def(
        WritesBuffer(),
        RaggedOperands(
            rows="qkv",
            row_offsets="input_row_offsets",
            lengths="cache_lengths",
            lookup_table="lookup_table",
            kv_blocks="kv_blocks",
            freqs_cis="freqs_cis",
        ),
    )
    assembly_format = (
        "$qkv `,` $input_row_offsets `,` $freqs_cis `,` $kv_blocks `,` $cache_lengths `,` $lookup_table "
        "attr-dict `:` type($qkv) `,` type($input_row_offsets) `,` type($freqs_cis) `,` type($kv_blocks) `,` "
        "type($cache_lengths) `,` type($lookup_table) `->` type($q_out) `,` type($kv_out)"
    )

    def __init__(
        self,
        qkv: Operand,
        input_row_offsets: Operand,
        freqs_cis: Operand,
        kv_blocks: Operand,
        cache_lengths: Operand,
        lookup_table: Operand,
        *,
        layer_idx: int,
        interleaved: bool,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        variant: RopeVariant | None = None,
    ) -> None:
        variant = variant if variant is not None else RopeVariant()
        ints = {"layer_idx": layer_idx, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "head_dim": head_dim}
        props: dict[str, Attribute] = {k: IntegerAttr(v, i64) for k, v in ints.items()}
        props.update(interleaved=IntegerAttr.from_bool(bool(interleaved)), **variant.props())
        operands = [qkv, input_row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table]
        super().__init__(operands, props, rule=partial(self.rule, **ints, variant=variant))

    @property
    def layer_idx(self) -> int:
        """The layer written."""
        return self.layer_idx_attr.value.data

    @property
    def interleaved(self) -> bool:
        """Rope pairing: adjacent dims (True) or halves (False)."""
        return bool(self.interleaved_attr.value.data)

    @property
    def n_heads(self) -> int:
        """Query heads."""
        return self.n_heads_attr.value.data

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads."""
        return self.n_kv_heads_attr.value.data

    @property
    def head_dim(self) -> int:
        """Dims per head."""
        return self.head_dim_attr.value.data

    @property
    def variant(self) -> RopeVariant:
        """The length-dependent rope scaling (longrope / dynamic NTK), if any."""
        return RopeVariant.of(self)

    def infer_types(self) -> Sequence[Attribute]:
        ints = {name: getattr(self, name) for name in ("layer_idx", "n_heads", "n_kv_heads", "head_dim")}
        return self.rule(*(v.type for v in self.operands), **ints, variant=self.variant)

    @staticmethod
    def rule(
        qkv: Attribute,
        row_offsets: Attribute,
        freqs_cis: Attribute,
        kv_blocks: Attribute,
        cache_lengths: Attribute,
        lookup_table: Attribute,
        /,
        *,
        layer_idx: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        variant: RopeVariant,
    ) -> list[Attribute]:
        """The shape rule: q `[T, n_heads·head_dim]` of qkv's dtype and the kv_blocks type; qkv is
        `[T, (n_heads + 2·n_kv_heads)·head_dim]` and the cache has n_kv_heads heads of head_dim."""
        if min(n_heads, n_kv_heads, head_dim) < 1:
            raise ValueError(
                f"{_OP}: n_heads, n_kv_heads, head_dim must be >= 1, got {n_heads=}, {n_kv_heads=}, {head_dim=}"
            )
        check_even_head_dim(_OP, Dim(head_dim))
        x = expect_tensor(_OP, "qkv", qkv)
        expect_rank(_OP, "qkv", x, 2)
        width = (n_heads + 2 * n_kv_heads) * head_dim
        if x.shape[1] != Dim(width):
            raise ValueError(
                f"{_OP}: qkv dim 1 ({x.shape[1]}) != (n_heads + 2*n_kv_heads) * head_dim "
                f"= ({n_heads} + 2*{n_kv_heads}) * {head_dim} = {width}"
            )
        buf = check_kv_blocks(_OP, kv_blocks, layer_idx)
        if buf.shape[4] != Dim(n_kv_heads) or buf.shape[5] != Dim(head_dim):
            raise ValueError(
                f"{_OP}: kv_blocks [n_kv_heads, head_dim] = [{buf.shape[4]}, {buf.shape[5]}] "
                f"!= [{n_kv_heads}, {head_dim}] from the attributes"
            )
        if x.dtype != buf.dtype:
            raise ValueError(f"{_OP}: qkv dtype {x.dtype.name} != kv_blocks dtype {buf.dtype.name}")
        f = check_rope_freqs(_OP, freqs_cis, Dim(head_dim), variant)
        ro, _, _ = check_metadata(_OP, row_offsets, cache_lengths, lookup_table)
        expect_same_device(_OP, qkv=x, freqs_cis=f, kv_blocks=buf, input_row_offsets=ro)
        return [TensorType(x.dtype, [x.shape[0], n_heads * head_dim], x.device), buf]


def rope_split_store(
    qkv: TensorValue,
    input_row_offsets: TensorValue,
    freqs_cis: TensorValue,
    kv_blocks: BufferValue,
    cache_lengths: TensorValue,
    lookup_table: TensorValue,
    *,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    variant: RopeVariant | None = None,
) -> tuple[TensorValue, BufferValue]:
    """Split `qkv`, rope q and k, store k and v: one fused op.

    Args:
        qkv: `[total_seq_len, (n_heads + 2*n_kv_heads) * head_dim]`, q then k then v.
        input_row_offsets: uint32 `[B+1]`.
        freqs_cis: float `[max_pos, R]`, R <= head_dim (partial rotary when smaller);
            `[2·max_pos, R]` with `variant.long_after`.
        kv_blocks: the current cache version.
        cache_lengths: uint32 `[B]`.
        lookup_table: uint32 `[B, max_pages]`.
        layer_idx: the layer written.
        interleaved: rope pairing (see `ops.rope`).
        n_heads: query heads.
        n_kv_heads: key/value heads (the cache's).
        head_dim: dims per head (the cache's; even).
        variant: longrope / dynamic NTK selection by sequence length (see `ops.rope`).

    Returns:
        `(q, kv_blocks)`: q after rope `[total_seq_len, n_heads * head_dim]`, next cache version.

    Example:
        >>> q, kv = ops.rope_split_store(qkv, ro, freqs, kv, lens, lookup, layer_idx=0,
        ...                              interleaved=False, n_heads=4, n_kv_heads=2, head_dim=16)
    """
    op = emit(RopeSplitStoreOp(qkv, input_row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table,
                               layer_idx=layer_idx, interleaved=interleaved, n_heads=n_heads,
                               n_kv_heads=n_kv_heads, head_dim=head_dim, variant=variant))  # fmt: skip
    return TensorValue(op.q_out), BufferValue(op.kv_out)


# --- torch ----------------------------------------------------------------------------
def rope_split_store_decomposed(
    qkv: torch.Tensor,
    input_row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    long_after: int | None = None,
    ntk: list[float] | None = None,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The aten form: positions and cache rows are computed once and shared by q, k and v."""
    t = qkv.shape[0]
    q, k, v = torch.split(qkv, [n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=1)
    ro, lens = as_index(input_row_offsets), as_index(cache_lengths)
    batch, pos = token_positions(ro, lens, t)
    freqs = token_freqs(freqs_cis, batch, pos, ro, lens, RopeVariant.from_schema(long_after, ntk))
    q = apply_rotary(q.reshape(t, n_heads, head_dim), freqs, interleaved=interleaved)
    k = apply_rotary(k.reshape(t, n_kv_heads, head_dim), freqs, interleaved=interleaved)
    rows = cache_rows(
        kv_blocks.shape, as_index(lookup_table), batch, pos, layer_idx=layer_idx, key_or_value=0
    )
    v_rows = rows + kv_blocks.shape[2] * kv_blocks.shape[3]  # key_or_value=1: the next slab
    kv = write_rows(kv_blocks, rows, k, inplace=inplace)
    kv = write_rows(kv, v_rows, v.reshape(t, n_kv_heads, head_dim), inplace=inplace)
    return q.reshape(t, n_heads * head_dim), kv


@torch.library.custom_op("fusegraph::rope_split_store", mutates_args=())
def _rss_custom(
    qkv: torch.Tensor,
    input_row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    long_after: int | None = None,
    ntk: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_store_capacity("rope_split_store", kv_blocks, qkv, input_row_offsets, cache_lengths, lookup_table)
    return rope_split_store_decomposed(
        qkv, input_row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table,
        layer_idx, interleaved, n_heads, n_kv_heads, head_dim, long_after, ntk,
    )  # fmt: skip


def _rss_fake(
    qkv: torch.Tensor,
    input_row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    long_after: int | None = None,
    ntk: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return qkv.new_empty((qkv.shape[0], n_heads * head_dim)), torch.empty_like(kv_blocks)


_rss_custom.register_fake(_rss_fake)


@torch.library.custom_op("fusegraph::rope_split_store_", mutates_args=("kv_blocks",))
def _rss_inplace_custom(
    qkv: torch.Tensor,
    input_row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    long_after: int | None = None,
    ntk: list[float] | None = None,
) -> torch.Tensor:
    check_store_capacity("rope_split_store_", kv_blocks, qkv, input_row_offsets, cache_lengths, lookup_table)
    q, _ = rope_split_store_decomposed(
        qkv, input_row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table,
        layer_idx, interleaved, n_heads, n_kv_heads, head_dim, long_after, ntk, inplace=True,
    )  # fmt: skip
    return q


def _rss_inplace_fake(*args: Any, **kwargs: Any) -> torch.Tensor:
    """q of the in-place op: the functional op's first result (the two share one schema)."""
    return _rss_fake(*args, **kwargs)[0]


_rss_inplace_custom.register_fake(_rss_inplace_fake)


@torch_impl(RopeSplitStoreOp)
def _rss_torch(
    op: RopeSplitStoreOp,
    qkv: torch.Tensor,
    row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    *,
    ctx: LoweringContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    props = (op.layer_idx, op.interleaved, op.n_heads, op.n_kv_heads, op.head_dim, *op.variant.schema_args())
    args = (qkv, row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table, *props)
    if ctx.mode == "custom":
        if ctx.inplace:
            return torch.ops.fusegraph.rope_split_store_(*args), kv_blocks
        q, kv = torch.ops.fusegraph.rope_split_store(*args)
        return q, kv
    check_store_capacity(op.name, kv_blocks, qkv, row_offsets, cache_lengths, lookup_table)
    return rope_split_store_decomposed(*args, inplace=ctx.inplace)
