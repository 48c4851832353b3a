"""Sliding-window attention against transformers' Mistral and Qwen2 (`use_sliding_window`)
modules: prompts longer than the window, prefill in chunks, decode steps, ragged batches,
paged caches of several page sizes, fused and unfused, dense and GPTQ."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, Qwen2Config
from transformers.models.mistral.modeling_mistral import MistralAttention, MistralRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, Qwen2RotaryEmbedding

from fusegraph.nn import AttentionWithRope, GPTQAttentionWithRope, QuantizationConfig, RotaryEmbedding
from fusegraph.nn.attention_config import MHAMaskVariant

from .hf_harness import kv_params_for, run_against_hf

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, WINDOW = 64, 4, 2, 16, 5
# seq 0: a 9-token prompt (longer than the window) in one chunk; seq 1: a 12-token prompt in
# two chunks (7 + 5); seq 2: 1 token, then it joins decoding; then 4 decode steps.
STEPS = [[9, 7, 1], [0, 5, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]


def _mistral():
    config = MistralConfig(  # type: ignore[call-arg]  # HF configs take these through **kwargs; their typed __init__ omits them
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        sliding_window=WINDOW,
        num_hidden_layers=1,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return config, MistralAttention(config, layer_idx=0).double().eval(), MistralRotaryEmbedding


def _qwen2():
    config = Qwen2Config(  # type: ignore[call-arg]  # HF configs take these through **kwargs; their typed __init__ omits them
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        use_sliding_window=True,
        sliding_window=WINDOW,
        max_window_layers=0,
        num_hidden_layers=1,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        attn_implementation="eager",
    )
    torch.manual_seed(1)
    attn = Qwen2Attention(config, layer_idx=0).double().eval()
    return config, attn, Qwen2RotaryEmbedding


def _layer(config, page_size, fuse, quant=None, **extra):
    kv_params = kv_params_for(config, page_size, HEAD_DIM)
    theta = config.rope_parameters["rope_theta"]
    rope = RotaryEmbedding(HIDDEN, HEADS, theta, 64, head_dim=HEAD_DIM, interleaved=False)
    kwargs = dict(
        rope=rope,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        hidden_size=HIDDEN,
        kv_params=kv_params,
        sliding_window=config.sliding_window,
        _fuse_rope_and_store=fuse,
        **extra,
    )
    if quant is None:
        return AttentionWithRope(**kwargs), rope, kv_params
    return GPTQAttentionWithRope(quantization_config=quant, **kwargs), rope, kv_params


@pytest.mark.parametrize(("page_size", "fuse"), [(4, True), (1, False), (16, True)])
def test_mistral_window__matches_hf_over_chunked_prefill_and_decode(page_size, fuse):
    config, attn_hf, rotary = _mistral()
    layer, rope, kv_params = _layer(config, page_size, fuse)
    assert layer.mask_variant is MHAMaskVariant.SLIDING_WINDOW_CAUSAL_MASK
    layer.load_state_dict({k: v.detach().float() for k, v in attn_hf.state_dict().items()})
    run_against_hf(layer, rope, kv_params, config, attn_hf, rotary, STEPS)


def test_qwen2_use_sliding_window__matches_hf_with_bias():
    config, attn_hf, rotary = _qwen2()
    assert config.sliding_window == WINDOW and config.layer_types == ["sliding_attention"]
    layer, rope, kv_params = _layer(config, 2, False, has_bias=True, mask_variant="sliding_window_causal")
    layer.load_state_dict({k: v.detach().float() for k, v in attn_hf.state_dict().items()})
    run_against_hf(layer, rope, kv_params, config, attn_hf, rotary, STEPS)


def test_gptq_mistral_window__matches_hf_on_the_dequantized_weights():
    from fusegraph.nn import quantize_gptq_projections

    from .reference import dequantize_gptq

    config, attn_hf, rotary = _mistral()
    quant = QuantizationConfig(bits=4, group_size=16, desc_act=False, sym=True)
    layer, rope, kv_params = _layer(config, 4, True, quant=quant)
    dense = {k.removesuffix(".weight"): v.detach().float() for k, v in attn_hf.state_dict().items()}
    qstate = quantize_gptq_projections(dense, quant)
    layer.load_state_dict(qstate)
    with torch.no_grad():  # HF runs the very weights the checkpoint holds
        for p in dense:
            parts = (qstate[f"{p}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx"))
            w = dequantize_gptq(*parts, bits=4, zero_format=quant.zero_format)
            getattr(attn_hf, p).weight.copy_(w)
    run_against_hf(layer, rope, kv_params, config, attn_hf, rotary, STEPS, tol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sliding_window=0), "sliding_window must be a positive int or None, got 0"),
        (dict(sliding_window=2.5), "sliding_window must be a positive int or None, got 2.5"),
        (dict(sliding_window=4, mask_variant="causal"), "contradicts sliding_window=4"),
        (dict(mask_variant=MHAMaskVariant.SLIDING_WINDOW_CAUSAL_MASK), "needs sliding_window"),
        (
            dict(mask_variant="chunked_causal"),
            r"mask_variant must be one of \['causal', 'sliding_window_causal'\]",
        ),
    ],
)
def test_window_arguments__refused_with_the_field_named(kwargs, match):
    config, _, _ = _mistral()
    kv_params = kv_params_for(config, 4, HEAD_DIM)
    rope = RotaryEmbedding(HIDDEN, HEADS, 10000.0, 64, head_dim=HEAD_DIM)
    with pytest.raises(ValueError, match=match):
        AttentionWithRope(
            rope=rope, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, hidden_size=HIDDEN,
            kv_params=kv_params, **kwargs,
        )  # fmt: skip


def test_window_and_dynamic_ntk_unfused__iree_matches_hf():
    """One IREE compile: the unfused chain with a sliding window and dynamic NTK (prompts past
    the original max of 8), against HF Mistral with the same rope parameters."""
    pytest.importorskip("iree.compiler")
    from fusegraph.nn import rope_scaling_from_hf

    config, _, rotary = _mistral()
    config.max_position_embeddings = 8
    config.rope_parameters = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    torch.manual_seed(2)
    attn_hf = MistralAttention(config, layer_idx=0).double().eval()
    kv_params = kv_params_for(config, 4, HEAD_DIM)
    scaling = rope_scaling_from_hf(config.rope_parameters, config.max_position_embeddings)
    rope = RotaryEmbedding(HIDDEN, HEADS, 10000.0, 64, head_dim=HEAD_DIM, interleaved=False, scaling=scaling)
    layer = AttentionWithRope(
        rope=rope, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, hidden_size=HIDDEN,
        kv_params=kv_params, sliding_window=WINDOW, _fuse_rope_and_store=False,
    )  # fmt: skip
    layer.load_state_dict({k: v.detach().float() for k, v in attn_hf.state_dict().items()})
    run_against_hf(layer, rope, kv_params, config, attn_hf, rotary, STEPS, backend="iree", tol=5e-5)
