"""`DecoderModel`: a whole decoder LLM as one graph, from token ids to last-token logits.

Layout and names follow HF's `*ForCausalLM`, so graph weight names equal checkpoint names:
`model.embed_tokens.weight`, `model.layers.<i>.{self_attn,mlp,input_layernorm,
post_attention_layernorm}.*`, `model.norm.weight`, `lm_head.weight` (absent when tied: the
logits then use `model.embed_tokens.weight`). The rope table is the shared weight
`rope.freqs_cis`.

The graph (`build_graph(num_blocks)`) takes, in order:

| input | type |
|---|---|
| tokens | int64 `[total_seq_len]` (a ragged batch, sequences back to back) |
| input_row_offsets | uint32 `[batch_plus_1]` |
| kv_blocks | `!fg.buffer` `[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`, model dtype |
| cache_lengths | uint32 `[batch]` |
| lookup_table | uint32 `[batch, max_pages]` |

and returns float32 logits `[batch, vocab_size]` of each sequence's last token, as MAX does.
The last three inputs are `PagedKVCacheManager.prepare(...).kv_inputs`.

Example:
    >>> model = load_model("qwen3-gptq/", device="cpu", dtype="float32")
    >>> manager = model.kv_manager(num_blocks=64)
    >>> run = model.compile(num_blocks=64)
    >>> seqs = [manager.claim(max_len=64)]
    >>> batch = manager.prepare(seqs, [3])
    >>> (logits,) = run(torch.tensor([1, 2, 3]), batch.row_offsets, *batch.kv_inputs)
    >>> manager.commit(seqs, [3])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fusegraph import ops
from fusegraph.compiler import BufferType, DeviceRef, DType, Graph, TensorType, TensorValue
from fusegraph.nn.attention import AttentionWithRope
from fusegraph.nn.embedding import Embedding
from fusegraph.nn.hf_config import ModelConfig
from fusegraph.nn.kv_cache import KVCacheParams, PagedCacheValues
from fusegraph.nn.layer import LayerList, Module
from fusegraph.nn.mlp import MLP, make_linear
from fusegraph.nn.norm import RMSNorm
from fusegraph.nn.rotary import RotaryEmbedding
from fusegraph.nn.transformer import TransformerBlock

if TYPE_CHECKING:
    from fusegraph.runtime import CompiledModel
    from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager

DEFAULT_PIPELINE = "default"
"""`fusegraph.compile`'s default pipeline, resolved per backend and device by
`fusegraph.runtime.pipeline.default_pipeline` (fusions, cleanup, `gptq-repack` on eager CUDA)."""


class _Backbone(Module):
    """HF's `model.` prefix: embed_tokens, layers, norm."""

    def __init__(self, embed: Embedding, layers: Sequence[TransformerBlock], norm: RMSNorm) -> None:
        super().__init__()
        self.embed_tokens = embed
        self.layers = LayerList(layers)
        self.norm = norm


class DecoderModel(Module):
    """Embedding, N `TransformerBlock`s, the final norm and `lm_head` (tied or not).

    Args:
        config: The model's settings (`ModelConfig.from_file`).
        dtype: Weight, activation and KV-cache type (default: the config's).
        device: Where weights, inputs and the cache live (default CPU).
        fuse: Emit `fg.rope_split_store` (True) or the canonical unfused rope/split/store.
        stacked_qkv: Per layer (or one bool for all): one `qkv_proj` instead of q/k/v_proj.
        stacked_gate_up: Per layer (or one bool): one `gate_up_proj` instead of gate/up.
        quantized_lm_head: `lm_head` is a GPTQ projection (GPTQModel's `lm_head: true`).
        max_seq_len: Rows of the rope table (default: `max_position_embeddings`).
        page_size: Tokens per KV-cache page.
        scales_dtype: The GPTQ scales' type.
        tp_reduce: Tensor parallelism: each block's reduce (see `TransformerBlock`).
        logits_gather: Tensor parallelism: applied to the lm_head output `[batch, vocab/tp]`
            (last tokens only), before the float32 cast.

    Raises:
        ValueError: Inconsistent dims (from the layers; naming the field).
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype: DType | None = None,
        device: DeviceRef | None = None,
        fuse: bool = True,
        stacked_qkv: bool | Sequence[bool] = False,
        stacked_gate_up: bool | Sequence[bool] = False,
        quantized_lm_head: bool = False,
        max_seq_len: int | None = None,
        page_size: int = 16,
        scales_dtype: DType = DType.float16,
        tp_reduce: Callable[[TensorValue], TensorValue] | None = None,
        logits_gather: Callable[[TensorValue], TensorValue] | None = None,
    ) -> None:
        super().__init__()
        c = config
        self.tp_reduce, self.logits_gather = tp_reduce, logits_gather
        self.config, self.fuse = c, fuse
        self.dtype = dtype if dtype is not None else c.dtype
        self.device = device if device is not None else DeviceRef.CPU()
        self.kv_params = KVCacheParams(
            dtype=self.dtype,
            n_kv_heads=c.num_key_value_heads,
            head_dim=c.head_dim,
            num_layers=c.num_hidden_layers,
            page_size=page_size,
            devices=[self.device],
        )
        self.rope = RotaryEmbedding(
            dim=c.hidden_size,
            n_heads=c.num_attention_heads,
            theta=c.rope_theta,
            max_seq_len=max_seq_len or c.max_position_embeddings,
            head_dim=c.head_dim,
            interleaved=False,
            scaling=c.rope_scaling,
            device=self.device,
        )
        self._share(self.rope)
        qkv_flags = _per_layer("stacked_qkv", stacked_qkv, c.num_hidden_layers)
        gate_up_flags = _per_layer("stacked_gate_up", stacked_gate_up, c.num_hidden_layers)
        self.scales_dtype = scales_dtype
        blocks = [self._block(i, qkv_flags[i], gate_up_flags[i]) for i in range(c.num_hidden_layers)]
        norm = RMSNorm(c.hidden_size, self.dtype, c.rms_norm_eps, self.device)
        self.model = _Backbone(Embedding(c.vocab_size, c.hidden_size, self.dtype, self.device), blocks, norm)
        if not c.tie_word_embeddings:
            quant = c.quantization if quantized_lm_head else None
            self.lm_head = make_linear(
                c.hidden_size, c.vocab_size, dtype=self.dtype, device=self.device, quant_config=quant,
                scales_dtype=scales_dtype,
            )  # fmt: skip

    def _block(self, layer_idx: int, stacked_qkv: bool, stacked_gate_up: bool) -> TransformerBlock:
        c, dev = self.config, self.device
        extra: dict[str, Any] = {}
        if (window := c.sliding_windows[layer_idx]) is not None:
            extra["sliding_window"] = window
        attention = AttentionWithRope(
            rope=self.rope,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            hidden_size=c.hidden_size,
            kv_params=self.kv_params,
            dtype=self.dtype,
            stacked_qkv=stacked_qkv,
            has_bias=c.attention_bias,
            quant_config=c.quantization,
            use_qk_norm=c.use_qk_norm,
            rms_norm_eps=c.rms_norm_eps,
            _fuse_rope_and_store=self.fuse,
            **extra,
        )
        mlp = MLP(
            c.hidden_size,
            c.intermediate_size,
            self.dtype,
            [dev],
            quant_config=c.quantization,
            has_bias=c.mlp_bias,
            stacked_gate_up=stacked_gate_up,
            scales_dtype=self.scales_dtype,
        )
        attention_norm = RMSNorm(c.hidden_size, self.dtype, c.rms_norm_eps, dev)
        mlp_norm = RMSNorm(c.hidden_size, self.dtype, c.rms_norm_eps, dev)
        return TransformerBlock(attention, mlp, attention_norm, mlp_norm, tp_reduce=self.tp_reduce)

    # --- graph -------------------------------------------------------------------------
    def input_types(self, num_blocks: int) -> list[TensorType | BufferType]:
        """The graph's input types, in order (see the module docstring)."""
        dev, u32 = self.device, DType.uint32
        return [
            TensorType(DType.int64, ["total_seq_len"], dev),
            TensorType(u32, ["batch_plus_1"], dev),
            BufferType(self.dtype, self.kv_params.blocks_shape(num_blocks), dev),
            TensorType(u32, ["batch"], dev),
            TensorType(u32, ["batch", "max_pages"], dev),
        ]

    def build_graph(self, num_blocks: int, name: str | None = None) -> Graph:
        """The whole model as one graph over a cache of `num_blocks` pages.

        Example:
            >>> g = model.build_graph(num_blocks=64)
            >>> PassManager(default_pipeline("eager", "cpu")).run(g)
        """
        name = name or f"{self.config.model_type}_x{self.config.num_hidden_layers}"
        with Graph(name, input_types=self.input_types(num_blocks)) as g:
            tokens, row_offsets, *kv_inputs = g.inputs
            g.output(self(tokens, row_offsets, PagedCacheValues(*kv_inputs)))
        return g

    def __call__(self, tokens: TensorValue, row_offsets: TensorValue, kv: PagedCacheValues) -> TensorValue:
        """Logits float32 `[batch, vocab]` of each sequence's last token (inside a graph)."""
        x = self.model.embed_tokens(tokens)
        freqs_cis = self.rope.freqs_cis
        for i, block in enumerate(self.model.layers):
            x = block(i, x, kv, freqs_cis, row_offsets)
        # Each sequence's last row is row_offsets[b + 1] - 1; norm and lm_head run on those only.
        last = ops.cast(row_offsets[1:], DType.int64) - 1.0
        x = self.model.norm(ops.gather(x, last, axis=0))
        if self.config.tie_word_embeddings:
            logits = x @ self.model.embed_tokens.weight("weight").T
        else:
            logits = self.lm_head(x)
        if self.logits_gather is not None:
            logits = self.logits_gather(logits)
        return logits if self.dtype == DType.float32 else ops.cast(logits, DType.float32)

    # --- running -----------------------------------------------------------------------
    def kv_manager(self, num_blocks: int) -> PagedKVCacheManager:
        """A `PagedKVCacheManager` for this model's cache (same params and device)."""
        from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager

        return PagedKVCacheManager(self.kv_params, num_blocks)

    def compile(
        self,
        num_blocks: int,
        *,
        backend: str = "eager",
        device: str | None = None,
        pipeline: str | None = DEFAULT_PIPELINE,
        cuda_graphs: bool = False,
        **options: Any,
    ) -> CompiledModel:
        """Build the graph and compile it (running `pipeline` on it) with this model's weights.

        Args:
            num_blocks: Pages of the KV cache the graph takes (`kv_manager(num_blocks)`).
            backend: "eager" or "iree".
            device: "cpu", "cuda" or "cuda:N" (default: the model's device).
            pipeline: "default" (`fusegraph.compile`'s, resolved for the backend and device),
                pipeline text, or None to run the graph as built.
            cuda_graphs: Eager on CUDA: capture and replay CUDA graphs.
            **options: IREE backend options.

        Returns:
            `run(tokens, row_offsets, kv_blocks, cache_lengths, lookup_table) -> (logits,)`.
        """
        import fusegraph

        device = device or str(self.device.to_torch())
        return fusegraph.compile(
            self.build_graph(num_blocks),
            backend=backend,
            device=device,
            weights=self.state_dict(),
            cuda_graphs=cuda_graphs,
            pipeline=pipeline,
            **options,
        )


def _per_layer(name: str, value: bool | Sequence[bool], layers: int) -> list[bool]:
    if isinstance(value, bool):
        return [value] * layers
    flags = [bool(v) for v in value]
    if len(flags) != layers:
        raise ValueError(f"DecoderModel: {name} has {len(flags)} entries for {layers} layers")
    return flags
