"""`fg.kv_cache.store`: write a ragged batch of keys or values into the paged KV cache.

Row `t` of sequence `b` (position `p = cache_lengths[b] + t - input_row_offsets[b]`) goes to
`kv_blocks[lookup_table[b, p // page_size], key_or_value, layer_idx, p % page_size]`.
The op takes the current kv_blocks version and returns the next one, so the IR stays
functional; the eager runtime writes the caller's buffer in place.

torch.library ops (stable; CUDA kernels are registered for the in-place form):
    `fusegraph::kv_cache_store(Tensor kv_blocks, Tensor x, Tensor input_row_offsets,
    Tensor cache_lengths, Tensor lookup_table, int layer_idx, int key_or_value) -> Tensor`
    (functional: returns the new kv_blocks; for export and torch-mlir), and
    `fusegraph::kv_cache_store_(Tensor(a!) kv_blocks, Tensor x, Tensor input_row_offsets,
    Tensor cache_lengths, Tensor lookup_table, int layer_idx, int key_or_value) -> ()`
    (in place). Both refuse, before writing anything, a position outside the sequence's
    pages (a lookup entry >= num_blocks, such as `NO_BLOCK`, ends a sequence's pages).

Example:
    >>> kv = ops.kv_cache_store(kv, k, row_offsets, cache_lengths, lookup, layer_idx=0, key_or_value=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from xdsl.dialects.builtin import IntegerAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def

from fusegraph.compiler.effects import RaggedOperands, WritesBuffer
from fusegraph.compiler.graph import emit
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.compiler.values import BufferValue, TensorValue
from fusegraph.ops._common import expect_rank, expect_tensor
from fusegraph.ops._ragged import (
    as_index,
    cache_rows,
    check_heads_match_cache,
    check_kv_blocks,
    check_metadata,
    check_store_capacity,
    token_positions,
    write_rows,
)


@register_op
@irdl_op_definition
class KVCacheStoreOp(FgOp):
    """`%kv1 = fg.kv_cache.store %kv0, %x, %ro, %lens, %lookup {layer_idx = 0, key_or_value = 1}`"""

    name = "fg.kv_cache.store"
    kv_blocks = operand_def(BufferType)
    x = operand_def(TensorType)
    input_row_offsets = operand_def(TensorType)
    cache_lengths = operand_def(TensorType)
    lookup_table = operand_def(TensorType)
    layer_idx_attr = prop_def(IntegerAttr, prop_name="layer_idx")
    key_or_value_attr = prop_def(IntegerAttr, prop_name="key_or_value")
    result = result_def(BufferType)
    traits = traits_def(
        WritesBuffer(),
        RaggedOperands(
            rows="x",
            row_offsets="input_row_offsets",
            lengths="cache_lengths",
            lookup_table="lookup_table",
            kv_blocks="kv_blocks",
        ),
    )
    assembly_format = (
        "$kv_blocks `,` $x `,` $input_row_offsets `,` $cache_lengths `,` $lookup_table attr-dict `:` "
        "type($kv_blocks) `,` type($x) `,` type($input_row_offsets) `,` type($cache_lengths) `,` "
        "type($lookup_table) `->` type($result)"
    )

    def __init__(
        self,
        kv_blocks: Operand,
        x: Operand,
        input_row_offsets: Operand,
        cache_lengths: Operand,
        lookup_table: Operand,
        *,
        layer_idx: int,
        key_or_value: int,
    ) -> None:
        props = {"layer_idx": IntegerAttr(layer_idx, i64), "key_or_value": IntegerAttr(key_or_value, i64)}
        rule = partial(self.rule, layer_idx=layer_idx, key_or_value=key_or_value)
        super().__init__([kv_blocks, x, input_row_offsets, cache_lengths, lookup_table], props, rule=rule)

    @property
    def layer_idx(self) -> int:
        """The layer written."""
        return self.layer_idx_attr.value.data

    @property
    def key_or_value(self) -> int:
        """0 writes keys, 1 writes values."""
        return self.key_or_value_attr.value.data

    def infer_types(self) -> Sequence[Attribute]:
        types = (v.type for v in self.operands)
        return self.rule(*types, layer_idx=self.layer_idx, key_or_value=self.key_or_value)

    @staticmethod
    def rule(
        kv_blocks: Attribute,
        x: Attribute,
        row_offsets: Attribute,
        cache_lengths: Attribute,
        lookup_table: Attribute,
        *,
        layer_idx: int,
        key_or_value: int,
    ) -> list[Attribute]:
        """The shape rule: the result is the kv_blocks buffer type; `x` is `[T, Hkv, D]` of the
        cache's heads and dtype; `layer_idx` is one of the cache's layers."""
        op = "fg.kv_cache.store"
        if key_or_value not in (0, 1):
            raise ValueError(f"{op}: key_or_value must be 0 (key) or 1 (value), got {key_or_value}")
        buf = check_kv_blocks(op, kv_blocks, layer_idx)
        xt = expect_tensor(op, "x", x)
        expect_rank(op, "x", xt, 3)
        check_heads_match_cache(op, "x", xt, buf, heads_dim=1)
        check_metadata(op, row_offsets, cache_lengths, lookup_table)
        return [buf]


def kv_cache_store(
    kv_blocks: BufferValue,
    x: TensorValue,
    input_row_offsets: TensorValue,
    cache_lengths: TensorValue,
    lookup_table: TensorValue,
    *,
    layer_idx: int,
    key_or_value: int,
) -> BufferValue:
    """Store `x [T, n_kv_heads, head_dim]` at each token's position in the paged cache.

    Args:
        kv_blocks: the current cache version, `[num_blocks, 2, num_layers, page_size, Hkv, D]`.
        x: keys or values of the step's tokens, in the cache's dtype.
        input_row_offsets: uint32 `[B+1]`.
        cache_lengths: uint32 `[B]`, tokens cached per sequence before this step.
        lookup_table: uint32 `[B, max_pages]`, block id of each page of each sequence.
        layer_idx: the layer to write (< num_layers).
        key_or_value: 0 for keys, 1 for values.

    Returns:
        The next version of kv_blocks.

    Example:
        >>> kv = ops.kv_cache_store(kv, k, ro, lens, lookup, layer_idx=0, key_or_value=0)
        >>> kv = ops.kv_cache_store(kv, v, ro, lens, lookup, layer_idx=0, key_or_value=1)
    """
    meta = (input_row_offsets, cache_lengths, lookup_table)
    op = KVCacheStoreOp(kv_blocks, x, *meta, layer_idx=layer_idx, key_or_value=key_or_value)
    return BufferValue(emit(op).result)


# --- torch ----------------------------------------------------------------------------
def kv_cache_store_decomposed(
    kv_blocks: torch.Tensor,
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    key_or_value: int,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """The aten form of the store: a flattened `index_put` (or `index_put_` when `inplace`)."""
    batch, pos = token_positions(as_index(input_row_offsets), as_index(cache_lengths), x.shape[0])
    rows = cache_rows(
        kv_blocks.shape, as_index(lookup_table), batch, pos, layer_idx=layer_idx, key_or_value=key_or_value
    )
    return write_rows(kv_blocks, rows, x, inplace=inplace)


@torch.library.custom_op("fusegraph::kv_cache_store", mutates_args=())
def _store_custom(
    kv_blocks: torch.Tensor,
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    key_or_value: int,
) -> torch.Tensor:
    check_store_capacity("kv_cache_store", kv_blocks, x, input_row_offsets, cache_lengths, lookup_table)
    return kv_cache_store_decomposed(
        kv_blocks, x, input_row_offsets, cache_lengths, lookup_table, layer_idx, key_or_value
    )


@_store_custom.register_fake
def _store_fake(kv_blocks: torch.Tensor, *args: Any) -> torch.Tensor:
    return torch.empty_like(kv_blocks)


@torch.library.custom_op("fusegraph::kv_cache_store_", mutates_args=("kv_blocks",))
def _store_inplace_custom(
    kv_blocks: torch.Tensor,
    x: torch.Tensor,
    input_row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    key_or_value: int,
) -> None:
    check_store_capacity("kv_cache_store_", kv_blocks, x, input_row_offsets, cache_lengths, lookup_table)
    kv_cache_store_decomposed(
        kv_blocks, x, input_row_offsets, cache_lengths, lookup_table, layer_idx, key_or_value, inplace=True
    )


@_store_inplace_custom.register_fake
def _store_inplace_fake(kv_blocks: torch.Tensor, *args: Any) -> None:
    return None


@torch_impl(KVCacheStoreOp)
def _store_torch(
    op: KVCacheStoreOp,
    kv_blocks: torch.Tensor,
    x: torch.Tensor,
    row_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    *,
    ctx: LoweringContext,
) -> torch.Tensor:
    args = (kv_blocks, x, row_offsets, cache_lengths, lookup_table, op.layer_idx, op.key_or_value)
    if ctx.mode == "custom":
        if ctx.inplace:
            torch.ops.fusegraph.kv_cache_store_(*args)
            return kv_blocks
        out: torch.Tensor = torch.ops.fusegraph.kv_cache_store(*args)
        return out
    check_store_capacity(op.name, kv_blocks, x, row_offsets, cache_lengths, lookup_table)
    return kv_cache_store_decomposed(*args, inplace=ctx.inplace)
