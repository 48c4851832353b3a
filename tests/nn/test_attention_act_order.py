"""Act-order q/k/v stacking and `linear_cls` on GPTQAttentionWithRope.

Equal loaded `g_idx` (one permutation, as GPTQ gives projections of one input): the layer
emits one shared g_idx weight and `fuse-qkv-projections` stacks q/k/v; the stacked graph
equals the unstacked one (outputs and the whole cache) and the dequantized reference.
Unequal `g_idx`: the three stay apart and the pass says why.
"""

from __future__ import annotations

import functools

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.nn import (
    GPTQAttentionWithRope,
    GPTQLinear,
    KVCacheParams,
    Linear,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
    quantize_gptq_projections,
)
from fusegraph.passes import PassManager
from fusegraph.runtime import PagedKVCacheManager

from .reference import ReferenceAttention, dequantize_gptq

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 64, 4, 2, 16
CPU = DeviceRef.CPU()
CFG = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)
STEPS = ([5, 9], [1, 1], [1, 1])


def _layer(**kwargs):
    kv_params = KVCacheParams(
        dtype=DType.float32, n_kv_heads=KV_HEADS, head_dim=HEAD_DIM, num_layers=1, page_size=4, devices=[CPU]
    )
    rope = RotaryEmbedding(HIDDEN, HEADS, 10000.0, 32, interleaved=False)
    attn = GPTQAttentionWithRope(
        quantization_config=CFG,
        rope=rope,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        hidden_size=HIDDEN,
        kv_params=kv_params,
        **kwargs,
    )
    return attn, rope, kv_params


def _weights(gen):
    return {
        "q_proj": torch.randn(HEADS * HEAD_DIM, HIDDEN, generator=gen) * 0.2,
        "k_proj": torch.randn(KV_HEADS * HEAD_DIM, HIDDEN, generator=gen) * 0.2,
        "v_proj": torch.randn(KV_HEADS * HEAD_DIM, HIDDEN, generator=gen) * 0.2,
        "o_proj": torch.randn(HIDDEN, HEADS * HEAD_DIM, generator=gen) * 0.2,
    }


def _quantized(shared_perm: bool):
    return dict(_quantized_once(shared_perm))


@functools.cache
def _quantized_once(shared_perm: bool):
    """q/k/v/o quantized with act order: one permutation for q/k/v (as GPTQ gives them from
    the same inputs), or each its own."""
    gen = torch.Generator().manual_seed(4)
    weights = _weights(gen)
    perm = torch.randperm(HIDDEN, generator=gen)
    state = {}
    for name, w in weights.items():
        own = torch.randperm(w.shape[1], generator=gen)
        p = perm if shared_perm and name != "o_proj" else own
        state.update(quantize_gptq_projections({name: w}, CFG, perm=p))
    return state


def _graph(attn, rope, manager):
    types = [
        TensorType(DType.float32, ["total_seq_len", HIDDEN], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        *manager.input_types(),
    ]
    with Graph("attn", input_types=types) as g:
        x, ro, *kv_inputs = g.inputs
        g.output(attn(0, x, PagedCacheValues(*kv_inputs), rope.freqs_cis, ro))
    return g


def _qmatmuls(graph) -> int:
    return sum(op.name == "fg.qmatmul.gptq" for op in graph.module.walk())


def _run(model, manager, seed=9):
    gen = torch.Generator().manual_seed(seed)
    seqs = [manager.claim(max_len=16) for _ in STEPS[0]]
    outs, xs = [], []
    for tokens in STEPS:
        batch = manager.prepare(seqs, list(tokens))
        x = torch.randn(sum(tokens), HIDDEN, generator=gen)
        (y,) = model(x, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, list(tokens))
        outs.append(y)
        xs.append(x)
    return outs, xs, [manager.gather(s, layer_idx=0) for s in seqs]


def test_equal_g_idx__one_shared_weight_stacked_and_equal_to_unstacked_and_reference():
    attn, rope, kv_params = _layer()
    state = _quantized(shared_perm=True)
    attn.load_state_dict(state)
    assert attn.g_idx_sharing is None
    weights = attn.state_dict()
    assert "q_proj.g_idx" in weights and "k_proj.g_idx" not in weights and "v_proj.g_idx" not in weights
    results = {}
    for pipeline in ("default", None):
        manager = PagedKVCacheManager(kv_params, num_blocks=12)
        model = fusegraph.compile(
            _graph(attn, rope, manager), backend="eager", weights=weights, pipeline=pipeline
        )
        results[pipeline] = (_qmatmuls(model.graph), *_run(model, manager))
    (n_fused, out_f, xs, cache_f), (n_plain, out_p, _, cache_p) = results["default"], results[None]
    assert (n_fused, n_plain) == (2, 4)  # stacked q/k/v + o_proj vs four projections
    for a, b in zip(out_f, out_p, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for (kf, vf), (kp, vp) in zip(cache_f, cache_p, strict=True):
        torch.testing.assert_close(kf, kp, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vf, vp, rtol=1e-5, atol=1e-5)
    dense = {
        p: dequantize_gptq(
            *(state[f"{p}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx")), bits=4, zero_format="v1"
        )
        for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    wq, wk, wv, wo = (dense[p] for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    ref = ReferenceAttention(
        wq,
        wk,
        wv,
        wo,
        n_heads=HEADS,
        n_kv_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        theta=10000.0,
        interleaved=False,
    )
    for step, (tokens, x, y) in enumerate(zip(STEPS, xs, out_f, strict=True)):
        want = torch.cat([ref.step(i, c.double()) for i, c in enumerate(x.split(list(tokens)))])
        torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4, msg=lambda m: f"step {step}: {m}")


def test_unequal_g_idx__kept_apart_with_the_reason():
    attn, rope, kv_params = _layer()
    attn.load_state_dict(_quantized(shared_perm=False))
    assert attn.g_idx_sharing is not None and attn.g_idx_sharing.startswith(
        "k_proj.g_idx differs from q_proj.g_idx"
    )
    assert {"k_proj.g_idx", "v_proj.g_idx"} <= set(attn.state_dict())
    graph = _graph(attn, rope, PagedKVCacheManager(kv_params, num_blocks=12))
    stats = PassManager("fuse-qkv-projections").run(graph)
    assert stats["fuse-qkv-projections"].counters["fused"] == 0
    assert any("g_idx is a different value (k_proj.g_idx vs q_proj.g_idx)" in r for r in stats.reasons), (
        stats.reasons
    )
    assert _qmatmuls(graph) == 4


def test_reloading_equal_after_unequal__shares_again():
    attn, _, _ = _layer()
    attn.load_state_dict(_quantized(shared_perm=False))
    attn.load_state_dict(_quantized(shared_perm=True))
    assert attn.g_idx_sharing is None and "k_proj.g_idx" not in attn.state_dict()


class _MyGPTQ(GPTQLinear):
    pass


class _NoWeights:
    def __init__(self, in_dim, out_dim, **kwargs):
        self.in_dim = in_dim


class _WrongShape(Linear):
    """Declares a weight 8 rows too many for o_proj."""

    def __init__(self, in_dim, out_dim, **kwargs):
        super().__init__(in_dim, out_dim + 8, **kwargs)


def test_linear_cls__builds_o_proj_gptq_subclass_or_dense():
    attn, _, _ = _layer(linear_cls=_MyGPTQ)
    assert type(attn.o_proj) is _MyGPTQ and attn.o_proj.quant_config == CFG
    attn, _, _ = _layer(linear_cls=Linear, stacked_qkv=True)
    assert type(attn.o_proj) is Linear and isinstance(attn.qkv_proj, GPTQLinear)
    state = _quantized(shared_perm=True)
    w_o = dequantize_gptq(
        *(state[f"o_proj.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx")), bits=4, zero_format="v1"
    )
    state = {k: v for k, v in state.items() if not k.startswith("o_proj.")} | {"o_proj.weight": w_o.float()}
    qkv = {
        s: torch.cat([state.pop(f"{p}.{s}") for p in ("q_proj", "k_proj", "v_proj")], dim=1)
        for s in ("qweight", "qzeros", "scales")
    }
    state |= {f"qkv_proj.{s}": v for s, v in qkv.items()} | {"qkv_proj.g_idx": state.pop("q_proj.g_idx")}
    for p in ("k_proj", "v_proj"):
        state.pop(f"{p}.g_idx")
    attn.load_state_dict(state)
    assert attn.state_dict()["o_proj.weight"].shape == (HIDDEN, HEADS * HEAD_DIM)


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (_NoWeights, "built a _NoWeights, not a callable fusegraph Module"),
        (
            _WrongShape,
            r"cannot take the projection's weights: it declares \{'weight': \[72, 64\]\}, expected",
        ),
        (dict, "cannot be built"),
        (3, "not a class"),
    ],
)
def test_linear_cls__refused_when_it_cannot_take_the_weights(cls, match):
    with pytest.raises(ValueError, match=match):
        _layer(linear_cls=cls)
