"""Layers that build graphs, modelled on Modular MAX: projections, norms, rotary embedding,
KV-cache parameters, the attention layers, GPTQ checkpoint IO, and whole decoder models
(`DecoderModel`, `load_model`)."""

from fusegraph.nn.attention import AttentionWithRope
from fusegraph.nn.attention_config import MHAMaskVariant
from fusegraph.nn.checkpoint import (
    CheckpointError,
    GPTQCheckpoint,
    load_gptq_checkpoint,
    quantize_gptq,
    quantize_gptq_projections,
    save_gptq_checkpoint,
    validate_gptq_tensors,
)
from fusegraph.nn.decoder import DEFAULT_PIPELINE, DecoderModel
from fusegraph.nn.embedding import Embedding
from fusegraph.nn.gptq_attention import GPTQAttentionWithRope
from fusegraph.nn.gptq_quantizer import gptq_quantize
from fusegraph.nn.hf_config import SUPPORTED_MODEL_TYPES, ModelConfig, ModelLoadError
from fusegraph.nn.hf_loader import load_model, stack_projections
from fusegraph.nn.kv_cache import KVCacheParams, PagedCacheValues
from fusegraph.nn.layer import LayerList, Module, ParamSpec
from fusegraph.nn.linear import GPTQLinear, Linear
from fusegraph.nn.mlp import MLP
from fusegraph.nn.norm import RMSNorm
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.rotary import (
    DynamicNTKRopeScaling,
    LinearRopeScaling,
    Llama3RopeScaling,
    LongRopeScaling,
    RotaryEmbedding,
    YarnRopeScaling,
    rope_inv_freq,
    rope_scaling_from_hf,
)
from fusegraph.nn.transformer import TransformerBlock

__all__ = [
    "DEFAULT_PIPELINE",
    "MLP",
    "SUPPORTED_MODEL_TYPES",
    "AttentionWithRope",
    "CheckpointError",
    "DecoderModel",
    "Embedding",
    "GPTQAttentionWithRope",
    "GPTQCheckpoint",
    "GPTQLinear",
    "KVCacheParams",
    "LayerList",
    "MHAMaskVariant",
    "Linear",
    "DynamicNTKRopeScaling",
    "LinearRopeScaling",
    "LongRopeScaling",
    "Llama3RopeScaling",
    "ModelConfig",
    "ModelLoadError",
    "Module",
    "PagedCacheValues",
    "ParamSpec",
    "QuantizationConfig",
    "RMSNorm",
    "RotaryEmbedding",
    "TransformerBlock",
    "YarnRopeScaling",
    "gptq_quantize",
    "load_gptq_checkpoint",
    "load_model",
    "quantize_gptq",
    "quantize_gptq_projections",
    "rope_inv_freq",
    "rope_scaling_from_hf",
    "save_gptq_checkpoint",
    "stack_projections",
    "validate_gptq_tensors",
]
