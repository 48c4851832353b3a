"""Layers that build graphs, modelled on Modular MAX: projections, norms, rotary embedding,
KV-cache parameters, the attention layers, and GPTQ checkpoint IO."""

from fusegraph.nn.attention import AttentionWithRope
from fusegraph.nn.checkpoint import (
    CheckpointError,
    GPTQCheckpoint,
    load_gptq_checkpoint,
    quantize_gptq,
    quantize_gptq_projections,
    save_gptq_checkpoint,
    validate_gptq_tensors,
)
from fusegraph.nn.gptq_attention import GPTQAttentionWithRope
from fusegraph.nn.gptq_quantizer import gptq_quantize
from fusegraph.nn.kv_cache import KVCacheParams, PagedCacheValues
from fusegraph.nn.layer import LayerList, Module, ParamSpec
from fusegraph.nn.linear import GPTQLinear, Linear
from fusegraph.nn.norm import RMSNorm
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.rotary import (
    LinearRopeScaling,
    Llama3RopeScaling,
    RotaryEmbedding,
    YarnRopeScaling,
    rope_inv_freq,
    rope_scaling_from_hf,
)

__all__ = [
    "AttentionWithRope",
    "CheckpointError",
    "GPTQAttentionWithRope",
    "GPTQCheckpoint",
    "GPTQLinear",
    "KVCacheParams",
    "LayerList",
    "Linear",
    "LinearRopeScaling",
    "Llama3RopeScaling",
    "Module",
    "PagedCacheValues",
    "ParamSpec",
    "QuantizationConfig",
    "RMSNorm",
    "RotaryEmbedding",
    "YarnRopeScaling",
    "gptq_quantize",
    "load_gptq_checkpoint",
    "quantize_gptq",
    "quantize_gptq_projections",
    "rope_inv_freq",
    "rope_scaling_from_hf",
    "save_gptq_checkpoint",
    "validate_gptq_tensors",
]
