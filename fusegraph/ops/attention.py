"""`fg.attention.paged`: causal attention of a ragged batch of queries over the paged cache.

Query row `t` of sequence `b` sits at position `p = cache_lengths[b] + t - input_row_offsets[b]`
and attends to the keys of sequence `b` at positions `0 .. p` (the causal mask offset by
`cache_lengths[b]`), or `p - sliding_window + 1 .. p` with a sliding window. The step's own
keys must already be stored (the layer stores before it attends). Query head `h` reads
kv head `h // (n_heads / n_kv_heads)` (GQA; MQA when n_kv_heads = 1).

With the optional `perm` operand (int32 `[H·D]`, H and D static) the result, read as
`[T, H·D]`, has its columns permuted: `out[:, j] = attn[:, perm[j]]` (an act-order o_proj's
input, written by the attention instead of by a separate permute kernel; `fold-act-order-permutation`).

torch.library op (stable; kernels may be registered for it):
    `fusegraph::paged_attention(Tensor q, Tensor input_row_offsets, Tensor kv_blocks,
    Tensor cache_lengths, Tensor lookup_table, int layer_idx, float scale,
    int? sliding_window, Tensor? perm=None) -> Tensor` (pure; the mask is always causal).

Example:
    >>> out = ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=0, scale=head_dim**-0.5)
    >>> outp = ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=0, scale=0.125, perm=p)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.effects import RaggedOperands
from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import BufferType, TensorType, shape_str
from fusegraph.compiler.values import BufferValue, TensorValue
from fusegraph.ops._common import expect_dim, expect_dtype, expect_rank, expect_same_device, expect_tensor
from fusegraph.ops._ragged import (
    as_index,
    cache_rows,
    check_heads_match_cache,
    check_kv_blocks,
    check_metadata,
    token_positions,
)
from fusegraph.ops.norm import check_perm

MASKS = ("causal",)
_OP = "fg.attention.paged"


@register_op
@irdl_op_definition
class PagedAttentionOp(FgOp):
    """`%o = fg.attention.paged %q, %ro, %kv, %lens, %lookup (perm %p)? {layer_idx = 0, scale = 0.25, mask = "causal"}`"""

    name = "fg.attention.paged"
    q = operand_def(TensorType)
    input_row_offsets = operand_def(TensorType)
    kv_blocks = operand_def(BufferType)
    cache_lengths = operand_def(TensorType)
    lookup_table = operand_def(TensorType)
    perm = opt_operand_def(TensorType)
    layer_idx_attr = prop_def(IntegerAttr, prop_name="layer_idx")
    scale_attr = prop_def(FloatAttr, prop_name="scale")
    mask_attr = prop_def(StringAttr, prop_name="mask")
    sliding_window_attr = opt_prop_def(IntegerAttr, prop_name="sliding_window")
    result = result_def(TensorType)
    traits = traits_def(
        Pure(),
        RaggedOperands(
            rows="q",
            row_offsets="input_row_offsets",
            lengths="cache_lengths",
            lookup_table="lookup_table",
            kv_blocks="kv_blocks",
        ),
    )
    assembly_format = (
        "$q `,` $input_row_offsets `,` $kv_blocks `,` $cache_lengths `,` $lookup_table (`perm` $perm^)? "
        "attr-dict `:` type($q) `,` type($input_row_offsets) `,` type($kv_blocks) `,` type($cache_lengths) `,` "
        "type($lookup_table) (`perm` type($perm)^)? `->` type($result)"
    )

    def __init__(
        self,
        q: Operand,
        input_row_offsets: Operand,
        kv_blocks: Operand,
        cache_lengths: Operand,
        lookup_table: Operand,
        perm: Operand | None = None,
        *,
        layer_idx: int,
        scale: float,
        mask: str = "causal",
        sliding_window: int | None = None,
    ) -> None:
        props: dict[str, Attribute] = {
            "layer_idx": IntegerAttr(layer_idx, i64),
            "scale": FloatAttr(float(scale), Float64Type()),
            "mask": StringAttr(mask),
        }
        if sliding_window is not None:
            props["sliding_window"] = IntegerAttr(sliding_window, i64)
        rule = partial(self.rule, layer_idx=layer_idx, mask=mask, sliding_window=sliding_window)
        operands = [q, input_row_offsets, kv_blocks, cache_lengths, lookup_table, perm]
        super().__init__(operands, props, rule=rule)

    @property
    def layer_idx(self) -> int:
        """The layer read."""
        return self.layer_idx_attr.value.data

    @property
    def scale(self) -> float:
        """The score scale (usually `1/sqrt(head_dim)`)."""
        return self.scale_attr.value.data

    @property
    def mask(self) -> str:
        """The mask kind: "causal"."""
        return self.mask_attr.data

    @property
    def sliding_window(self) -> int | None:
        """With a window `w`, a query at position `p` sees keys `> p - w` only."""
        return None if self.sliding_window_attr is None else self.sliding_window_attr.value.data

    def infer_types(self) -> Sequence[Attribute]:
        q, ro, kv, lens, lookup = (v.type for v in self.operands[:5])
        perm = None if self.perm is None else self.perm.type
        return self.rule(
            q,
            ro,
            kv,
            lens,
            lookup,
            perm,
            layer_idx=self.layer_idx,
            mask=self.mask,
            sliding_window=self.sliding_window,
        )

    @staticmethod
    def rule(
        q: Attribute,
        row_offsets: Attribute,
        kv_blocks: Attribute,
        cache_lengths: Attribute,
        lookup_table: Attribute,
        perm: Attribute | None = None,
        *,
        layer_idx: int,
        mask: str,
        sliding_window: int | None,
    ) -> list[Attribute]:
        """The shape rule: the result is q's type; q is `[T, H, D]` with H a multiple of the
        cache's kv heads and the cache's D and dtype; perm, when present, is int32 `[H·D]`, H and D static."""
        op = _OP
        if mask not in MASKS:
            raise ValueError(f"{op}: mask must be one of {', '.join(MASKS)}, got {mask!r}")
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"{op}: sliding_window must be >= 1, got {sliding_window=}")
        buf = check_kv_blocks(op, kv_blocks, layer_idx)
        qt = expect_tensor(op, "q", q)
        expect_rank(op, "q", qt, 3)
        check_heads_match_cache(op, "q", qt, buf, heads_dim=-1)
        n_heads, n_kv_heads = qt.shape[1], buf.shape[4]
        if n_heads.is_static and n_kv_heads.is_static and n_heads.value % n_kv_heads.value:
            raise ValueError(
                f"{op}: q n_heads ({n_heads}) must be a multiple of kv_blocks n_kv_heads ({n_kv_heads})"
            )
        check_metadata(op, row_offsets, cache_lengths, lookup_table)
        if perm is not None:
            _check_perm_type(qt, expect_tensor(op, "perm", perm))
        return [qt]


def _check_perm_type(q: TensorType, perm: TensorType) -> None:
    expect_same_device(_OP, q=q, perm=perm)
    expect_rank(_OP, "perm", perm, 1)
    expect_dtype(_OP, "perm", perm, [DType.int32])
    heads, dim = q.shape[1], q.shape[2]
    if not (heads.is_static and dim.is_static):
        raise ValueError(f"{_OP}: perm needs static q heads and head dim, got q {shape_str(q.shape)}")
    expect_dim(_OP, "perm dim 0", perm.shape[0], heads.value * dim.value)


def paged_attention(
    q: TensorValue,
    input_row_offsets: TensorValue,
    kv_blocks: BufferValue,
    cache_lengths: TensorValue,
    lookup_table: TensorValue,
    *,
    layer_idx: int,
    scale: float,
    mask: str = "causal",
    sliding_window: int | None = None,
    perm: TensorValue | None = None,
) -> TensorValue:
    """Causal attention of `q [T, H, D]` over each sequence's cached keys and values.

    Args:
        q: queries `[total_seq_len, n_heads, head_dim]`, n_heads a multiple of n_kv_heads.
        input_row_offsets: uint32 `[B+1]`.
        kv_blocks: the cache version that already holds this step's keys and values.
        cache_lengths: uint32 `[B]`, tokens cached per sequence before this step.
        lookup_table: uint32 `[B, max_pages]`.
        layer_idx: the layer read.
        scale: multiplies `q·k` before the softmax.
        mask: "causal" (the only kind).
        sliding_window: if set, a query at position `p` sees keys `p - w + 1 .. p` only.
        perm: optional int32 `[H·D]` (H, D static): the output read as `[T, H·D]` is
            column-permuted, `out[:, j] = attn[:, perm[j]]`.

    Returns:
        The attention output, same type as `q`.

    Example:
        >>> kv = ops.kv_cache_store(kv, k, ro, lens, lookup, layer_idx=0, key_or_value=0)
        >>> kv = ops.kv_cache_store(kv, v, ro, lens, lookup, layer_idx=0, key_or_value=1)
        >>> out = ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=0, scale=0.125)
    """
    meta = (input_row_offsets, kv_blocks, cache_lengths, lookup_table)
    op = PagedAttentionOp(
        q, *meta, perm, layer_idx=layer_idx, scale=scale, mask=mask, sliding_window=sliding_window
    )
    return emit_tensor(op)


# --- torch ----------------------------------------------------------------------------
def _gather_sequence_kv(
    kv_blocks: torch.Tensor, lookup_table: torch.Tensor, batch: torch.Tensor, layer_idx: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of each token's sequence over the padded context `S = max_pages * page_size`:
    `[T, S, n_kv_heads, head_dim]` each, through 1-D index_selects only."""
    nb, max_pages = lookup_table.shape
    _, _, num_layers, page_size, n_kv_heads, head_dim = kv_blocks.shape
    context = max_pages * page_size
    seqs = torch.arange(nb, device=kv_blocks.device, dtype=torch.int64)[:, None].expand(nb, context)
    keys = torch.arange(context, device=kv_blocks.device, dtype=torch.int64)[None].expand(nb, context)
    k_rows = cache_rows(kv_blocks.shape, lookup_table, seqs, keys, layer_idx=layer_idx, key_or_value=0)
    k_rows = k_rows.index_select(0, batch).reshape(-1)
    v_rows = k_rows + num_layers * page_size  # key_or_value=1 is the next [num_layers, page] slab
    flat = kv_blocks.reshape(-1, n_kv_heads, head_dim)
    shape = (batch.shape[0], context, n_kv_heads, head_dim)
    return flat.index_select(0, k_rows).reshape(shape), flat.index_select(0, v_rows).reshape(shape)


def paged_attention_decomposed(
    q: torch.Tensor,
    input_row_offsets: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    scale: float,
    sliding_window: int | None,
    perm: torch.Tensor | None = None,
) -> torch.Tensor:
    """The aten form: gather each query's sequence K/V over the padded context, then a dense
    masked softmax in float32. GQA by reshaping q to `[T, Hkv, group, D]`. With `perm`, an
    index_select of the `[T, H·D]` result's columns."""
    t, n_heads, head_dim = q.shape
    n_kv_heads = kv_blocks.shape[4]
    lookup = as_index(lookup_table)
    batch, pos = token_positions(as_index(input_row_offsets), as_index(cache_lengths), t)
    k, v = _gather_sequence_kv(kv_blocks, lookup, batch, layer_idx)
    keys = torch.arange(k.shape[1], device=q.device, dtype=torch.int64)[None]
    visible = keys <= pos[:, None]
    if sliding_window is not None:
        visible = visible & (keys > pos[:, None] - sliding_window)
    qg = q.to(torch.float32).reshape(t, n_kv_heads, n_heads // n_kv_heads, head_dim)
    scores = torch.matmul(qg, k.to(torch.float32).permute(0, 2, 3, 1)) * scale  # [T, Hkv, G, S]
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v.to(torch.float32).permute(0, 2, 1, 3))  # [T, Hkv, G, D]
    out = out.reshape(t, n_heads, head_dim).to(q.dtype)
    if perm is None:
        return out
    return out.reshape(t, n_heads * head_dim).index_select(1, perm).reshape(t, n_heads, head_dim)


def check_attention_perm(q: torch.Tensor, perm: torch.Tensor | None) -> None:
    """ValueErrors naming `fg.attention.paged` unless `perm` is None or an int32 `[H·D]` permutation on q's device
    (its values read once per tensor, never under capture: `ops.norm.check_perm`).

    Example:
        >>> check_attention_perm(torch.zeros(1, 2, 2), torch.tensor([1, 0, 3, 2], dtype=torch.int32))
    """
    if perm is None:
        return
    d = q.shape[1] * q.shape[2] if q.dim() == 3 else -1
    if perm.dtype != torch.int32 or perm.dim() != 1 or perm.shape[0] != d or perm.device != q.device:
        raise ValueError(
            f"{_OP}: perm must be int32 [{d}] (q heads x head dim) on {q.device}, "
            f"got {perm.dtype} {list(perm.shape)} on {perm.device}"
        )
    check_perm(perm, d, _OP)


@torch.library.custom_op("fusegraph::paged_attention", mutates_args=())
def _attention_custom(
    q: torch.Tensor,
    input_row_offsets: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    scale: float,
    sliding_window: int | None,
    perm: torch.Tensor | None = None,
) -> torch.Tensor:
    check_attention_perm(q, perm)
    return paged_attention_decomposed(
        q, input_row_offsets, kv_blocks, cache_lengths, lookup_table, layer_idx, scale, sliding_window, perm
    )


@_attention_custom.register_fake
def _attention_fake(q: torch.Tensor, *args: Any) -> torch.Tensor:
    return torch.empty_like(q)


@torch_impl(PagedAttentionOp)
def _attention_torch(
    op: PagedAttentionOp,
    q: torch.Tensor,
    row_offsets: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    perm: torch.Tensor | None = None,
    *,
    ctx: LoweringContext,
) -> torch.Tensor:
    check_attention_perm(q, perm)
    args = (q, row_offsets, kv_blocks, cache_lengths, lookup_table, op.layer_idx, op.scale, op.sliding_window)
    if ctx.mode == "custom":
        # no perm: the schema's default, so a graph without one lowers to the 8-operand call it always had
        out: torch.Tensor = (
            torch.ops.fusegraph.paged_attention(*args)
            if perm is None
            else torch.ops.fusegraph.paged_attention(*args, perm)
        )
        return out
    return paged_attention_decomposed(*args, perm)
