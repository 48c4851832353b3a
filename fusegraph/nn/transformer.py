"""`TransformerBlock`: one pre-norm decoder layer with residuals (HF Llama/Mistral/Qwen)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fusegraph.compiler import TensorValue
from fusegraph.nn.kv_cache import PagedCacheValues
from fusegraph.nn.layer import Module
from fusegraph.nn.mlp import MLP
from fusegraph.nn.norm import RMSNorm

if TYPE_CHECKING:
    from fusegraph.nn.attention import AttentionWithRope


class TransformerBlock(Module):
    """`h = x + attn(norm1(x)); out = h + mlp(norm2(h))`, named as HF names it.

    Children: `self_attn` (an `AttentionWithRope`), `mlp`, `input_layernorm`,
    `post_attention_layernorm`.

    Args:
        attention: The attention layer, called as `attention(layer_idx, x, kv, freqs_cis, row_offsets)`.
        mlp: The feed-forward layer.
        attention_norm: The norm before attention (`input_layernorm`).
        mlp_norm: The norm before the MLP (`post_attention_layernorm`).
        tp_reduce: Tensor parallelism: applied to the attention output and to the MLP output
            before each residual add (an all-reduce of the per-rank partial sums). The attribute
            `reduce_attention = False` leaves the attention output alone (a tensor-parallel
            o_proj that already ran on the heads of all ranks: `distributed/model.py`).

    Example:
        >>> block = TransformerBlock(attn, MLP(64, 96), RMSNorm(64), RMSNorm(64))
        >>> x = block(0, x, PagedCacheValues(*kv_inputs), rope.freqs_cis, row_offsets)
    """

    def __init__(
        self,
        attention: AttentionWithRope,
        mlp: MLP,
        attention_norm: RMSNorm,
        mlp_norm: RMSNorm,
        tp_reduce: Callable[[TensorValue], TensorValue] | None = None,
    ) -> None:
        super().__init__()
        self.tp_reduce = tp_reduce
        self.reduce_attention = True
        self.self_attn = attention
        self.mlp = mlp
        self.input_layernorm = attention_norm
        self.post_attention_layernorm = mlp_norm

    def __call__(
        self,
        layer_idx: int,
        x: TensorValue,
        kv_collection: PagedCacheValues,
        freqs_cis: TensorValue,
        input_row_offsets: TensorValue,
    ) -> TensorValue:
        """`x` `[T, hidden]` -> `[T, hidden]`; writes layer `layer_idx` of the cache."""
        reduce = self.tp_reduce if self.tp_reduce is not None else (lambda y: y)
        attn = self.self_attn(layer_idx, self.input_layernorm(x), kv_collection, freqs_cis, input_row_offsets)
        h = x + (reduce(attn) if self.reduce_attention else attn)
        return h + reduce(self.mlp(self.post_attention_layernorm(h)))
