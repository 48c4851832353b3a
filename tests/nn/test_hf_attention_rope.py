"""Rope variants against transformers' own modules, step by step as HF generation runs them:
dynamic NTK (Llama) with prompts longer than the original max, longrope (Phi-3) below and
above its switch with NeoX-layout partial rotary, GLM's interleaved (GPT-J layout) partial
rotary, GPT-J's own rotary functions, and the fused/unfused, eager/IREE paths of each.

Steps: seq 0 a 14-token prompt (past the original max of 12 at once), seq 1 a 10-token prompt
then decodes to lengths 11, 12, 13 (crossing the switch during decoding), seq 2 a 3-token
prompt that stays short.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GlmConfig, LlamaConfig, Phi3Config
from transformers.models.glm.modeling_glm import GlmAttention, GlmRotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding
from transformers.models.phi3.modeling_phi3 import Phi3Attention, Phi3RotaryEmbedding

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.nn import AttentionWithRope, RotaryEmbedding, rope_scaling_from_hf

from .hf_harness import kv_params_for, run_against_hf

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, ORIGINAL, ROWS = 64, 4, 2, 16, 12, 48
STEPS = [[14, 10, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
CPU = DeviceRef.CPU()


def _dims():
    return dict(
        hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, num_hidden_layers=1
    )


def _llama_dynamic():
    config = LlamaConfig(  # type: ignore[call-arg]  # HF configs take these through **kwargs; their typed __init__ omits them
        **_dims(),
        max_position_embeddings=ORIGINAL,
        rope_parameters={"rope_type": "dynamic", "factor": 3.0, "rope_theta": 500.0},
        attn_implementation="eager",
    )
    return config, LlamaAttention(config, layer_idx=0), LlamaRotaryEmbedding, False


def _phi3_longrope():
    gen = torch.Generator().manual_seed(5)
    rotary = int(HEAD_DIM * 0.5)
    config = Phi3Config(  # type: ignore[call-arg]  # HF configs take these through **kwargs; their typed __init__ omits them
        **_dims(),
        max_position_embeddings=ROWS,
        original_max_position_embeddings=ORIGINAL,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 300.0,
            "partial_rotary_factor": 0.5,
            "short_factor": (1 + torch.rand(rotary // 2, generator=gen)).tolist(),
            "long_factor": (2 + 6 * torch.rand(rotary // 2, generator=gen)).tolist(),
        },
        attn_implementation="eager",
    )
    return config, Phi3Attention(config, layer_idx=0), Phi3RotaryEmbedding, False


def _glm_partial_interleaved():
    config = GlmConfig(  # type: ignore[call-arg]  # HF configs take these through **kwargs; their typed __init__ omits them
        **_dims(),
        head_dim=HEAD_DIM,
        partial_rotary_factor=0.5,
        max_position_embeddings=ROWS,
        rope_parameters={"rope_type": "default", "rope_theta": 800.0, "partial_rotary_factor": 0.5},
        attn_implementation="eager",
    )
    return config, GlmAttention(config, layer_idx=0), GlmRotaryEmbedding, True


MODELS = {
    "llama-dynamic": _llama_dynamic,
    "phi3-longrope-partial": _phi3_longrope,
    "glm-partial": _glm_partial_interleaved,
}


def _setup(name, page_size, fuse):
    torch.manual_seed(3)
    config, attn_hf, rotary_cls, interleaved = MODELS[name]()
    attn_hf = attn_hf.double().eval()
    params = config.rope_parameters
    rope = RotaryEmbedding(
        HIDDEN,
        HEADS,
        params["rope_theta"],
        ROWS,
        head_dim=HEAD_DIM,
        interleaved=interleaved,
        scaling=rope_scaling_from_hf(params, config.max_position_embeddings),
        partial_rotary_factor=params.get("partial_rotary_factor", 1.0),
    )
    kv_params = kv_params_for(config, page_size, HEAD_DIM)
    state = {k: v.detach().float() for k, v in attn_hf.state_dict().items()}
    layer = AttentionWithRope(
        rope=rope,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        hidden_size=HIDDEN,
        kv_params=kv_params,
        stacked_qkv="qkv_proj.weight" in state,
        has_bias="q_proj.bias" in state,
        _fuse_rope_and_store=fuse,
    )
    layer.load_state_dict(state)
    return layer, rope, kv_params, config, attn_hf, rotary_cls


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("page_size", "fuse"), [(4, True), (1, False)])
def test_rope_variant__matches_hf_over_prefill_and_decode(name, page_size, fuse):
    layer, rope, kv_params, config, attn_hf, rotary_cls = _setup(name, page_size, fuse)
    run_against_hf(layer, rope, kv_params, config, attn_hf, rotary_cls, STEPS, tol=5e-5)


def test_rope_variants__differ_from_the_plain_rope_where_hf_does():
    """The scalings matter in these steps: dropping them breaks the match."""
    for name in ("llama-dynamic", "phi3-longrope-partial"):
        layer, rope, kv_params, config, attn_hf, rotary_cls = _setup(name, 4, True)
        rope.variant = type(rope.variant)()
        if name == "phi3-longrope-partial":
            rope._table = rope.table()[:ROWS]
        with pytest.raises(AssertionError):
            run_against_hf(layer, rope, kv_params, config, attn_hf, rotary_cls, STEPS, tol=5e-5)


def test_longrope_partial__iree_matches_hf():
    """One IREE compile: the fused op with longrope + NeoX partial rotary."""
    pytest.importorskip("iree.compiler")
    layer, rope, kv_params, config, attn_hf, rotary_cls = _setup("phi3-longrope-partial", 4, True)
    run_against_hf(layer, rope, kv_params, config, attn_hf, rotary_cls, STEPS, backend="iree", tol=5e-5)


@pytest.mark.parametrize("rotary_dim", [4, 8])
def test_gptj_partial_interleaved__fg_rope_matches_gptj_rotary(rotary_dim):
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb, create_sinusoidal_positions

    t, h = 9, 3
    x = torch.randn(t, h, HEAD_DIM)
    positions = torch.tensor([4, 5, 6, 7, 0, 1, 2, 10, 11])  # 3 sequences: cached 4, 0, 10
    sincos = create_sinusoidal_positions(ROWS, rotary_dim)[positions][None]  # as GPTJAttention: [1, t, r]
    sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
    x_rot = apply_rotary_pos_emb(x[None, :, :, :rotary_dim], sin, cos)  # [1, t, h, r]
    want = torch.cat([x_rot[0], x[..., rotary_dim:]], dim=-1)
    rope = RotaryEmbedding(
        HIDDEN, 4, 10000.0, ROWS, head_dim=HEAD_DIM, rotary_dim=rotary_dim, interleaved=True
    )
    types = [
        TensorType(DType.float32, ["t", h, HEAD_DIM], CPU),
        TensorType(DType.uint32, ["b1"], CPU),
        TensorType(DType.uint32, ["b"], CPU),
    ]
    with Graph("rope", input_types=types) as g:
        xv, ro, lens = g.inputs
        g.output(ops.rope(xv, ro, lens, rope.freqs_cis, interleaved=True))
    (got,) = fusegraph.compile(g, backend="eager", weights=rope.state_dict())(
        x, torch.tensor([0, 4, 7, 9], dtype=torch.uint32), torch.tensor([4, 0, 10], dtype=torch.uint32)
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _run_ours(name, fuse):
    """Our layer alone over STEPS: every step's output and each sequence's whole cache."""
    from fusegraph.nn import PagedCacheValues
    from fusegraph.runtime import PagedKVCacheManager

    layer, rope, kv_params, *_ = _setup(name, 2, fuse)
    manager = PagedKVCacheManager(kv_params, num_blocks=3 * ROWS // 2)
    types = [TensorType(DType.float32, ["t", HIDDEN], CPU), TensorType(DType.uint32, ["b1"], CPU)]
    with Graph("attn", input_types=[*types, *manager.input_types()]) as g:
        x, ro, *kv = g.inputs
        g.output(layer(0, x, PagedCacheValues(*kv), rope.freqs_cis, ro))
    model = fusegraph.compile(g, backend="eager", weights=layer.state_dict(), pipeline=None)
    gen = torch.Generator().manual_seed(1)
    seqs = [manager.claim(max_len=ROWS) for _ in STEPS[0]]
    outs = []
    for tokens in STEPS:
        batch = manager.prepare(seqs, tokens)
        outs.append(
            model(torch.randn(sum(tokens), HIDDEN, generator=gen), batch.row_offsets, *batch.kv_inputs)[0]
        )
        manager.commit(seqs, tokens)
    return outs, [torch.cat(manager.gather(s, layer_idx=0)) for s in seqs]


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_equals_unfused__outputs_and_whole_cache(name):
    (fused_out, fused_kv), (plain_out, plain_kv) = _run_ours(name, True), _run_ours(name, False)
    for got, want in zip(fused_out + fused_kv, plain_out + plain_kv, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
