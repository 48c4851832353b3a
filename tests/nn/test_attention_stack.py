"""Fused equals unfused (outputs and the whole cache), a 2-layer LayerList stack sharing one
cache against the chained reference, and the unfused form being the one the fusion pass fuses."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DType, Graph, TensorType
from fusegraph.dialect import parse
from fusegraph.nn import (
    KVCacheParams,
    LayerList,
    Module,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
)
from fusegraph.passes import PassManager
from fusegraph.runtime import PagedKVCacheManager

from .test_attention_e2e import CPU, HEAD_DIM, HEADS, HIDDEN, STEPS, THETA, _build, _layer

CASE = dict(stacked_qkv=False, has_bias=True, clip_qkv=0.15, n_kv_heads=2, interleaved=False, page_size=4)
QUANT = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)


class Block(Module):
    def __init__(self, attn):
        super().__init__()
        self.self_attn = attn


class Model(Module):
    def __init__(self, blocks):
        super().__init__()
        self.layers = LayerList(blocks)


def _stack(case, quant, n_layers):
    kv_params = KVCacheParams(DType.float32, case["n_kv_heads"], HEAD_DIM, n_layers, case["page_size"], [CPU])
    rope = RotaryEmbedding(HIDDEN, HEADS, THETA, 64, interleaved=case["interleaved"])
    model = Model([Block(_layer(case, quant, rope, kv_params)) for _ in range(n_layers)])
    refs = []
    for i, block in enumerate(model.layers):
        state, ref = _build({**case, "seed": i}, quant)
        block.self_attn.load_state_dict(state)
        refs.append(ref)
    manager = PagedKVCacheManager(kv_params, num_blocks=3 * -(-32 // case["page_size"]))
    with Graph(
        "stack",
        input_types=[
            TensorType(DType.float32, ["total_seq_len", HIDDEN], CPU),
            TensorType(DType.uint32, ["batch_plus_1"], CPU),
            *manager.input_types(),
        ],
    ) as g:
        x, row_offsets, *kv_inputs = g.inputs
        cache = PagedCacheValues(*kv_inputs)
        for i, block in enumerate(model.layers):
            x = block.self_attn(i, x, cache, rope.freqs_cis, row_offsets)
        g.output(x)
    return model, refs, manager, g


def _run(model, manager, g, seed=3):
    assert set(model.state_dict()) == set(g.weights)
    compiled = fusegraph.compile(g, backend="eager", device="cpu", weights=model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    seqs = [manager.claim(max_len=32) for _ in range(3)]
    outputs, inputs = [], []
    for tokens in STEPS:
        batch = manager.prepare(seqs, tokens)
        inputs.append(torch.randn(sum(tokens), HIDDEN, generator=gen))
        outputs.append(compiled(inputs[-1], batch.row_offsets, *batch.kv_inputs)[0])
        manager.commit(seqs, tokens)
    return seqs, inputs, outputs


@pytest.mark.parametrize("use_qk_norm", [False, True])
@pytest.mark.parametrize("quant", [None, QUANT], ids=["dense", "gptq"])
def test_fused_equals_unfused__outputs_and_whole_cache(quant, use_qk_norm):
    results = []
    for fuse in (True, False):
        model, _, manager, g = _stack({**CASE, "fuse": fuse, "use_qk_norm": use_qk_norm}, quant, 1)
        _, _, outputs = _run(model, manager, g)
        results.append((outputs, manager.kv_blocks.clone()))
    (fused_out, fused_kv), (unfused_out, unfused_kv) = results
    for a, b in zip(fused_out, unfused_out):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused_kv, unfused_kv, rtol=1e-6, atol=1e-6)
    assert fused_kv.abs().sum() > 0


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("quant", [None, QUANT], ids=["dense", "gptq"])
def test_layer_list_stack__two_layers_share_the_cache_and_match_the_chained_reference(quant, fuse):
    model, refs, manager, g = _stack({**CASE, "fuse": fuse, "use_qk_norm": True}, quant, 2)
    assert "layers.1.self_attn.o_proj." + ("qweight" if quant else "weight") in g.weights
    seqs, inputs, outputs = _run(model, manager, g)
    for tokens, x, y in zip(STEPS, inputs, outputs):
        want = []
        for i, chunk in enumerate(x.split(tokens)):
            h = chunk.double()
            for ref in refs:
                h = ref.step(i, h)
            want.append(h)
        torch.testing.assert_close(y.double(), torch.cat(want), rtol=5e-5, atol=5e-5)
    for layer, ref in enumerate(refs):
        for i, seq in enumerate(seqs):
            k, v = manager.gather(seq, layer_idx=layer)
            torch.testing.assert_close(k.double(), ref.cache[i][0], rtol=5e-5, atol=5e-5)
            torch.testing.assert_close(v.double(), ref.cache[i][1], rtol=5e-5, atol=5e-5)


@pytest.mark.parametrize("quant", [None, QUANT], ids=["dense", "gptq"])
def test_unfused_layer_form__is_fused_by_the_fusion_pass_into_the_layer_fused_form(quant):
    case = {**CASE, "use_qk_norm": False}
    _, _, _, unfused = _stack({**case, "fuse": False}, quant, 2)
    _, _, _, fused = _stack({**case, "fuse": True}, quant, 2)
    g = parse(str(unfused))
    PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(g)
    reference = parse(str(fused))
    PassManager("canonicalize,cse,dce").run(reference)
    # same ops in the same order, and the same fused-op attributes (their print order may differ)
    assert [op.name for op in g.block.ops] == [op.name for op in reference.block.ops]
    assert _fused_attrs(g) == _fused_attrs(reference) == [(i, False, HEADS, 2, HEAD_DIM) for i in (0, 1)]


def _fused_attrs(graph):
    return [
        (op.layer_idx, op.interleaved, op.n_heads, op.n_kv_heads, op.head_dim)
        for op in graph.block.ops
        if op.name == "fg.rope_split_store"
    ]
