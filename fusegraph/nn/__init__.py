"""Layers that build graphs, modelled on Modular MAX: projections, norms, rotary embedding,
KV-cache parameters, the attention layers, GPTQ checkpoint IO, and whole decoder models
(`DecoderModel`, `load_model`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusegraph.compiler.lazy import lazy_exports

if TYPE_CHECKING:
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

# Lazy (PEP 562): `fusegraph model --help` imports this package without torch.
_LAZY = {
    "DEFAULT_PIPELINE": "fusegraph.nn.decoder",
    "MLP": "fusegraph.nn.mlp",
    "SUPPORTED_MODEL_TYPES": "fusegraph.nn.hf_config",
    "AttentionWithRope": "fusegraph.nn.attention",
    "CheckpointError": "fusegraph.nn.checkpoint",
    "DecoderModel": "fusegraph.nn.decoder",
    "Embedding": "fusegraph.nn.embedding",
    "GPTQAttentionWithRope": "fusegraph.nn.gptq_attention",
    "GPTQCheckpoint": "fusegraph.nn.checkpoint",
    "GPTQLinear": "fusegraph.nn.linear",
    "KVCacheParams": "fusegraph.nn.kv_cache",
    "LayerList": "fusegraph.nn.layer",
    "MHAMaskVariant": "fusegraph.nn.attention_config",
    "Linear": "fusegraph.nn.linear",
    "DynamicNTKRopeScaling": "fusegraph.nn.rotary",
    "LinearRopeScaling": "fusegraph.nn.rotary",
    "LongRopeScaling": "fusegraph.nn.rotary",
    "Llama3RopeScaling": "fusegraph.nn.rotary",
    "ModelConfig": "fusegraph.nn.hf_config",
    "ModelLoadError": "fusegraph.nn.hf_config",
    "Module": "fusegraph.nn.layer",
    "PagedCacheValues": "fusegraph.nn.kv_cache",
    "ParamSpec": "fusegraph.nn.layer",
    "QuantizationConfig": "fusegraph.nn.quant",
    "RMSNorm": "fusegraph.nn.norm",
    "RotaryEmbedding": "fusegraph.nn.rotary",
    "TransformerBlock": "fusegraph.nn.transformer",
    "YarnRopeScaling": "fusegraph.nn.rotary",
    "gptq_quantize": "fusegraph.nn.gptq_quantizer",
    "load_gptq_checkpoint": "fusegraph.nn.checkpoint",
    "load_model": "fusegraph.nn.hf_loader",
    "quantize_gptq": "fusegraph.nn.checkpoint",
    "quantize_gptq_projections": "fusegraph.nn.checkpoint",
    "rope_inv_freq": "fusegraph.nn.rotary",
    "rope_scaling_from_hf": "fusegraph.nn.rotary",
    "save_gptq_checkpoint": "fusegraph.nn.checkpoint",
    "stack_projections": "fusegraph.nn.hf_loader",
    "validate_gptq_tensors": "fusegraph.nn.checkpoint",
}


__getattr__ = lazy_exports(__name__, _LAZY)


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
