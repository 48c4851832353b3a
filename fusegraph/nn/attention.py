"""`AttentionWithRope`: MAX's attention layer over a paged KV cache, with every flag.

Forward, for `x` `[T, hidden]` (T = total_seq_len of a ragged batch):

1. `qkv = x · Wqkvᵀ (+ b)`: one `qkv_proj` (`stacked_qkv`) or `concat(q_proj, k_proj, v_proj)`.
2. `use_qk_norm`: per-head RMSNorm of q and k (`q_norm.weight`, `k_norm.weight`, `[head_dim]`),
   before rope, as in Qwen3.
3. Rope, split and store (the rope's `rotary_dim` and length-dependent scaling, `rope.variant`,
   reach both forms):
   - `_fuse_rope_and_store=True`: one `fg.rope_split_store` on qkv. With `use_qk_norm`, q and k
     are normalized first: `split → reshape → rms_norm → reshape → concat(q, k, v)`, then the
     fused op (the norm cannot live inside it).
   - `False`: the canonical unfused form of docs/internals.md: `split`, reshape to heads,
     (norm), `rope(q)`, `rope(k)`, `kv_cache_store(k)`, `kv_cache_store(v)`, reshape q back.
4. `fg.attention.paged` over the cache version holding this step's keys and values (with
   `sliding_window`, each query sees only the last `sliding_window` positions).
5. `o_proj` (never biased, as in HF Qwen2/Llama).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from fusegraph import ops
from fusegraph.compiler import BufferValue, DeviceRef, DType, TensorValue
from fusegraph.compiler.graph import emit
from fusegraph.nn.attention_config import MHAMaskVariant, check_scale, resolve_mask, validate_heads
from fusegraph.nn.gptq_share import share_equal_g_idx
from fusegraph.nn.kv_cache import KVCacheParams, PagedCacheValues
from fusegraph.nn.layer import Module
from fusegraph.nn.linear import GPTQLinear, Linear, check_gptq_dims
from fusegraph.nn.norm import RMSNorm
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.rotary import RotaryEmbedding
from fusegraph.ops.rope_split_store_chain import UnfusedChain

#: A q/k/v/o projection: `Linear`, `GPTQLinear` or what `linear_cls` builds.
Projection = Callable[[TensorValue], TensorValue]


class AttentionWithRope(Module):
    """Multi-head (GQA/MQA) attention with rotary embedding over a paged KV cache.

    All arguments are keyword-only, named as in MAX.

    Args:
        rope: The rotary embedding; its `interleaved` flag picks the rope pairing and its
            `head_dim` must equal `kv_params.head_dim`.
        num_attention_heads: Query heads H.
        num_key_value_heads: Key/value heads Hkv (H must be a multiple; 1 is MQA).
        hidden_size: Model size (input of q/k/v, output of o_proj).
        kv_params: The cache's shape; `head_dim` is the head size D.
        devices: Where the weights live (default: `kv_params.devices`).
        dtype: Weight and activation type (must equal `kv_params.dtype`).
        scale: Attention scale; default `1/sqrt(head_dim)`.
        linear_cls: The dense projection class (`Linear` or a compatible one).
        stacked_qkv: One `qkv_proj` `[(H+2Hkv)·D, hidden]` instead of q/k/v_proj.
        has_bias: Biases on the q/k/v projections (`*.bias`).
        quant_config: A GPTQ `QuantizationConfig`: every projection becomes a `GPTQLinear`.
        clip_qkv: Clamp the q/k/v projection **weights** to `[-clip_qkv, clip_qkv]`, as MAX
            documents (GPTQ: the `clip` attribute of `fg.qmatmul.gptq`, on the dequantized
            weight). HF's OLMo clamps the projected activations instead, so OLMo checkpoints
            give different results here.
        use_qk_norm: Per-head RMSNorm of q and k before rope.
        rms_norm_eps: The QK norms' epsilon.
        sliding_window: Each query at position `p` sees keys `p - sliding_window + 1 .. p`
            only (HF Mistral, Qwen2 `use_sliding_window`: `kv_idx > q_idx - sliding_window`),
            in prefill chunks and decode steps alike (positions count from the cache start).
        mask_variant: `MHAMaskVariant.CAUSAL_MASK` or `SLIDING_WINDOW_CAUSAL_MASK` (or their
            strings "causal", "sliding_window_causal"); None follows `sliding_window`.
        _fuse_rope_and_store: Emit `fg.rope_split_store` (True) or the unfused form.

    Raises:
        ValueError: H not divisible by Hkv; Hkv != kv_params.n_kv_heads; an odd head_dim;
            rope.head_dim != head_dim; hidden_size != H·head_dim when the rope implied head_dim;
            a GPTQ group_size not dividing hidden_size; dtype != kv_params.dtype; a head count or
            hidden_size that is not a positive int; a scale that is not finite and > 0; a
            sliding_window that is not a positive int; a mask_variant that contradicts it.

    Example:
        >>> attn = AttentionWithRope(rope=rope, num_attention_heads=4, num_key_value_heads=2,
        ...                          hidden_size=64, kv_params=kv_params)
        >>> out = attn(0, x, PagedCacheValues(*kv_inputs), rope.freqs_cis, row_offsets)
    """

    def __init__(
        self,
        *,
        rope: RotaryEmbedding,
        num_attention_heads: int,
        num_key_value_heads: int,
        hidden_size: int,
        kv_params: KVCacheParams,
        devices: Sequence[DeviceRef] | None = None,
        dtype: DType = DType.float32,
        scale: float | None = None,
        linear_cls: Callable[..., Projection] = Linear,
        stacked_qkv: bool = False,
        has_bias: bool = False,
        quant_config: QuantizationConfig | None = None,
        clip_qkv: float | None = None,
        use_qk_norm: bool = False,
        rms_norm_eps: float = 1e-6,
        sliding_window: int | None = None,
        mask_variant: MHAMaskVariant | str | None = None,
        _fuse_rope_and_store: bool = True,
    ) -> None:
        super().__init__()
        head_dim = kv_params.head_dim
        validate_heads(rope, num_attention_heads, num_key_value_heads, hidden_size, kv_params)
        self.sliding_window = resolve_mask(mask_variant, sliding_window)
        self.mask_variant = (
            MHAMaskVariant.CAUSAL_MASK
            if self.sliding_window is None
            else MHAMaskVariant.SLIDING_WINDOW_CAUSAL_MASK
        )
        scale = check_scale(scale)
        if dtype != kv_params.dtype:
            raise ValueError(
                f"{type(self).__name__}: dtype ({dtype}) must equal kv_params.dtype ({kv_params.dtype})"
            )
        if quant_config is not None:
            check_gptq_dims(quant_config, hidden_size, num_attention_heads * head_dim, "hidden_size")
            check_gptq_dims(
                quant_config, num_attention_heads * head_dim, hidden_size, "num_attention_heads*head_dim"
            )
        self.rope, self.kv_params, self.dtype = rope, kv_params, dtype
        self.n_heads, self.n_kv_heads, self.head_dim = num_attention_heads, num_key_value_heads, head_dim
        self.hidden_size, self.linear_cls, self.quant_config = hidden_size, linear_cls, quant_config
        self.devices = list(devices) if devices else list(kv_params.devices)
        self.scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
        self.stacked_qkv, self.has_bias, self.clip_qkv = stacked_qkv, has_bias, clip_qkv
        self.use_qk_norm, self.rms_norm_eps = use_qk_norm, rms_norm_eps
        self._fuse_rope_and_store = _fuse_rope_and_store
        self._share(rope)
        self._build_projections()

    # --- construction ------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        """H·D, the width of q."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Hkv·D, the width of k and of v."""
        return self.n_kv_heads * self.head_dim

    def _linear(self, in_dim: int, out_dim: int, has_bias: bool, clip: float | None) -> Projection:
        device = self.devices[0]
        if self.quant_config is not None:
            return GPTQLinear(in_dim, out_dim, self.quant_config, self.dtype, device, has_bias, clip)
        return self.linear_cls(
            in_dim, out_dim, dtype=self.dtype, device=device, has_bias=has_bias, clip_weight=clip
        )

    def _build_projections(self) -> None:
        qkv_dim = self.q_dim + 2 * self.kv_dim
        if self.stacked_qkv:
            self.qkv_proj = self._linear(self.hidden_size, qkv_dim, self.has_bias, self.clip_qkv)
        else:
            self.q_proj = self._linear(self.hidden_size, self.q_dim, self.has_bias, self.clip_qkv)
            self.k_proj = self._linear(self.hidden_size, self.kv_dim, self.has_bias, self.clip_qkv)
            self.v_proj = self._linear(self.hidden_size, self.kv_dim, self.has_bias, self.clip_qkv)
        self.o_proj = self._output_projection()
        if self.use_qk_norm:
            device = self.devices[0]
            self.q_norm = RMSNorm(self.head_dim, self.dtype, self.rms_norm_eps, device)
            self.k_norm = RMSNorm(self.head_dim, self.dtype, self.rms_norm_eps, device)

    def _output_projection(self) -> Projection:
        """o_proj `[hidden, H·D]`, never biased (a hook: `GPTQAttentionWithRope` builds it with
        `linear_cls`)."""
        return self._linear(self.q_dim, self.hidden_size, False, None)

    def _on_load(self) -> None:
        """After each `load_state_dict`: act-order GPTQ q/k/v whose loaded g_idx are equal
        emit q's g_idx weight, so `fuse-qkv-projections` can stack them (`gptq_share.py`);
        `g_idx_sharing` is None then, else the reason they stay apart."""
        if self.quant_config is not None and not self.stacked_qkv:
            self.g_idx_sharing = share_equal_g_idx(self, ["q_proj", "k_proj", "v_proj"])

    # --- forward -----------------------------------------------------------------------
    def __call__(
        self,
        layer_idx: int,
        x: TensorValue,
        kv_collection: PagedCacheValues,
        freqs_cis: TensorValue,
        input_row_offsets: TensorValue,
    ) -> TensorValue:
        """Attend `x` `[T, hidden]` and return `[T, hidden]`.

        Writes this step's keys and values into layer `layer_idx` of the cache and sets
        `kv_collection.kv_blocks` to the buffer version written.
        """
        total = x.shape[0]
        qkv = self._project_qkv(x)
        q, kv_blocks = self._rope_split_store(layer_idx, qkv, kv_collection, freqs_cis, input_row_offsets)
        kv_collection.kv_blocks = kv_blocks
        attn = ops.paged_attention(
            q.reshape([total, self.n_heads, self.head_dim]),
            input_row_offsets,
            kv_blocks,
            kv_collection.cache_lengths,
            kv_collection.lookup_table,
            layer_idx=layer_idx,
            scale=self.scale,
            sliding_window=self.sliding_window,
        )
        return self.o_proj(attn.reshape([total, self.q_dim]))

    def _project_qkv(self, x: TensorValue) -> TensorValue:
        if self.stacked_qkv:
            return self.qkv_proj(x)
        return ops.concat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], axis=1)

    def _rope_split_store(
        self,
        layer_idx: int,
        qkv: TensorValue,
        kv: PagedCacheValues,
        freqs_cis: TensorValue,
        row_offsets: TensorValue,
    ) -> tuple[TensorValue, BufferValue]:
        """One `fg.rope_split_store`, or (`_fuse_rope_and_store=False`) the chain it equals;
        `use_qk_norm` normalizes q and k per head before the rope in both."""
        if not self._fuse_rope_and_store:

            def qk_norm(q: TensorValue, k: TensorValue) -> tuple[TensorValue, TensorValue]:
                return self.q_norm(q), self.k_norm(k)

            chain = UnfusedChain.build(
                qkv, row_offsets, freqs_cis, kv.kv_blocks, kv.cache_lengths, kv.lookup_table,
                layer_idx=layer_idx, interleaved=self.rope.interleaved, n_heads=self.n_heads,
                n_kv_heads=self.n_kv_heads, head_dim=self.head_dim, variant=self.rope.variant,
                add=emit, qk_transform=qk_norm if self.use_qk_norm else None,
            )  # fmt: skip
            return TensorValue(chain.q), BufferValue(chain.kv)
        if self.use_qk_norm:
            total = qkv.shape[0]
            q, k, v = ops.split(qkv, [self.q_dim, self.kv_dim, self.kv_dim], axis=1)
            q = self.q_norm(q.reshape([total, self.n_heads, self.head_dim])).reshape([total, self.q_dim])
            k = self.k_norm(k.reshape([total, self.n_kv_heads, self.head_dim])).reshape([total, self.kv_dim])
            qkv = ops.concat([q, k, v], axis=1)
        return ops.rope_split_store(
            qkv, row_offsets, freqs_cis, kv.kv_blocks, kv.cache_lengths, kv.lookup_table,
            layer_idx=layer_idx, interleaved=self.rope.interleaved, n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads, head_dim=self.head_dim, variant=self.rope.variant,
        )  # fmt: skip
