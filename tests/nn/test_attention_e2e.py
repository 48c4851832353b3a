"""AttentionWithRope and GPTQAttentionWithRope against the dense reference, end to end.

Each case runs the ARCHITECTURE.md contract: a ragged prefill (5, 17, 1 tokens) then 3 decode
steps, comparing every step's output and the final cache contents (`manager.gather`). The flag
matrix is a 3-way covering array (every combination of any three flag values appears).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.nn import (
    AttentionWithRope,
    GPTQAttentionWithRope,
    KVCacheParams,
    PagedCacheValues,
    QuantizationConfig,
    RotaryEmbedding,
    quantize_gptq_projections,
)
from fusegraph.runtime import PagedKVCacheManager

from .covering import covering_array, uncovered_tuples
from .reference import ReferenceAttention, dequantize_gptq

HIDDEN, HEADS, HEAD_DIM, THETA, GROUP = 64, 4, 16, 10000.0, 16
STEPS = ([5, 17, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1])
CPU = DeviceRef.CPU()

LAYER_FACTORS: dict[str, Sequence[Any]] = {
    "fuse": [True, False],
    "stacked_qkv": [False, True],
    "has_bias": [False, True],
    "clip_qkv": [None, 0.15],
    "use_qk_norm": [False, True],
    "n_kv_heads": [2, 1],  # GQA, MQA
    "interleaved": [False, True],
    "page_size": [16, 1],
}
GPTQ_FACTORS: dict[str, Sequence[Any]] = {
    **LAYER_FACTORS,
    "bits": [4, 8],
    "sym": [True, False],
    "desc_act": [False, True],
}
DENSE_CASES = covering_array(LAYER_FACTORS, strength=3, seed=1)
GPTQ_CASES = covering_array(GPTQ_FACTORS, strength=3, seed=2)


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


def test_matrix__covers_every_three_flag_values():
    assert uncovered_tuples(DENSE_CASES, LAYER_FACTORS, 3) == []
    assert uncovered_tuples(GPTQ_CASES, GPTQ_FACTORS, 3) == []
    assert len(DENSE_CASES) + len(GPTQ_CASES) <= 40


def _float_weights(case, gen):
    kv_dim = case["n_kv_heads"] * HEAD_DIM
    w = {
        "q_proj": torch.randn(HEADS * HEAD_DIM, HIDDEN, generator=gen) * 0.2,
        "k_proj": torch.randn(kv_dim, HIDDEN, generator=gen) * 0.2,
        "v_proj": torch.randn(kv_dim, HIDDEN, generator=gen) * 0.2,
        "o_proj": torch.randn(HIDDEN, HEADS * HEAD_DIM, generator=gen) * 0.2,
    }
    extras = {
        f"{p}.bias": torch.randn(w[p].shape[0], generator=gen) * 0.5 for p in ("q_proj", "k_proj", "v_proj")
    }
    extras.update(
        {f"{n}.weight": 1 + 0.2 * torch.randn(HEAD_DIM, generator=gen) for n in ("q_norm", "k_norm")}
    )
    return w, extras


def _stack(case, weights, extras):
    """HF-named tensors (biases, norms) for the flags; q/k/v stacked into qkv_proj if asked."""
    state = {
        k: v
        for k, v in extras.items()
        if (case["has_bias"] or "bias" not in k) and (case["use_qk_norm"] or "norm" not in k)
    }
    if case["stacked_qkv"]:
        weights = {"qkv_proj": torch.cat([weights.pop(p) for p in ("q_proj", "k_proj", "v_proj")]), **weights}
        if case["has_bias"]:
            state["qkv_proj.bias"] = torch.cat([state.pop(f"{p}_proj.bias") for p in "qkv"])
    return weights, state


def _build(case, quant):
    """The layer, its loaded state, and the reference holding the same (dequantized) weights."""
    gen = torch.Generator().manual_seed(7 + case.get("seed", 0))
    weights, extras = _float_weights(case, gen)
    weights, state = _stack(case, weights, extras)
    if quant is None:
        state.update({f"{p}.weight": w for p, w in weights.items()})
        dense = dict(weights)
    else:
        qstate = quantize_gptq_projections(weights, quant)
        state.update(qstate)
        dense = {
            p: dequantize_gptq(
                *(qstate[f"{p}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx")),
                bits=quant.bits,
                zero_format=quant.zero_format,
            )
            for p in weights
        }
    if case["stacked_qkv"]:
        kv_dim = case["n_kv_heads"] * HEAD_DIM
        dense.update(
            zip(
                ("q_proj", "k_proj", "v_proj"),
                dense.pop("qkv_proj").split([HEADS * HEAD_DIM, kv_dim, kv_dim]),
            )
        )
    wq, wk, wv, wo = (dense[p].double() for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    ref = ReferenceAttention(
        wq,
        wk,
        wv,
        wo,
        n_heads=HEADS,
        n_kv_heads=case["n_kv_heads"],
        head_dim=HEAD_DIM,
        theta=THETA,
        interleaved=case["interleaved"],
        clip=case["clip_qkv"],
        biases=tuple(extras[f"{p}_proj.bias"].double() for p in "qkv") if case["has_bias"] else None,
        qk_norm=(extras["q_norm.weight"].double(), extras["k_norm.weight"].double(), 1e-6)
        if case["use_qk_norm"]
        else None,
    )
    return state, ref


def _layer(case, quant, rope, kv_params):
    kwargs = dict(
        rope=rope,
        num_attention_heads=HEADS,
        num_key_value_heads=case["n_kv_heads"],
        hidden_size=HIDDEN,
        kv_params=kv_params,
        dtype=kv_params.dtype,
        stacked_qkv=case["stacked_qkv"],
        has_bias=case["has_bias"],
        clip_qkv=case["clip_qkv"],
        use_qk_norm=case["use_qk_norm"],
        _fuse_rope_and_store=case["fuse"],
    )
    if quant is None:
        return AttentionWithRope(**kwargs)
    return GPTQAttentionWithRope(quantization_config=quant, **kwargs)


def _run_and_compare(case, quant, dtype=DType.float32):
    kv_params = KVCacheParams(
        dtype=dtype,
        n_kv_heads=case["n_kv_heads"],
        head_dim=HEAD_DIM,
        num_layers=1,
        page_size=case["page_size"],
        devices=[CPU],
    )
    rope = RotaryEmbedding(
        dim=HIDDEN, n_heads=HEADS, theta=THETA, max_seq_len=64, interleaved=case["interleaved"]
    )
    attn = _layer(case, quant, rope, kv_params)
    state, ref = _build(case, quant)
    attn.load_state_dict(
        {k: v.to(dtype.to_torch()) if v.dtype == torch.float32 else v for k, v in state.items()}
    )
    manager = PagedKVCacheManager(kv_params, num_blocks=3 * -(-32 // case["page_size"]))
    with Graph(
        "attn",
        input_types=[
            TensorType(dtype, ["total_seq_len", HIDDEN], CPU),
            TensorType(DType.uint32, ["batch_plus_1"], CPU),
            *manager.input_types(),
        ],
    ) as g:
        x, row_offsets, *kv_inputs = g.inputs
        g.output(attn(0, x, PagedCacheValues(*kv_inputs), rope.freqs_cis, row_offsets))
    model = fusegraph.compile(g, backend="eager", device="cpu", weights=attn.state_dict())

    _steps_and_compare(model, manager, ref, dtype)


def _steps_and_compare(model, manager, ref, dtype):
    tol = 2e-5 if dtype == DType.float32 else 2e-2  # ARCHITECTURE.md: f32 ~1e-5, bf16 ~2e-2

    def close(got, want, what):
        atol = tol * max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=atol, msg=lambda m: f"{what}: {m}")

    gen = torch.Generator().manual_seed(3)
    seqs = [manager.claim(max_len=32) for _ in range(3)]
    for step, tokens in enumerate(STEPS):
        batch = manager.prepare(seqs, tokens)
        xs = torch.randn(sum(tokens), HIDDEN, generator=gen).to(dtype.to_torch())
        (y,) = model(xs, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, tokens)
        close(y, torch.cat([ref.step(i, c.double()) for i, c in enumerate(xs.split(tokens))]), f"step {step}")
    for i, seq in enumerate(seqs):
        k, v = manager.gather(seq, layer_idx=0)
        close(k, ref.cache[i][0], f"K of seq {i}")
        close(v, ref.cache[i][1], f"V of seq {i}")


@pytest.mark.parametrize("case", DENSE_CASES, ids=_case_id)
def test_attention_with_rope__matches_reference_over_prefill_and_decode(case):
    _run_and_compare(case, None)


@pytest.mark.parametrize("case", GPTQ_CASES, ids=_case_id)
def test_gptq_attention_with_rope__matches_reference_over_prefill_and_decode(case):
    quant = QuantizationConfig(
        bits=case["bits"], group_size=GROUP, desc_act=case["desc_act"], sym=case["sym"]
    )
    _run_and_compare(case, quant)


BF16_CASE = dict(
    stacked_qkv=True,
    has_bias=True,
    clip_qkv=0.15,
    use_qk_norm=True,
    n_kv_heads=2,
    interleaved=True,
    page_size=4,
)


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("bits", [None, 4], ids=["dense", "gptq4"])
def test_bf16__layers_match_reference_within_bf16_tolerance(bits, fuse):
    quant = QuantizationConfig(bits=bits, group_size=GROUP, desc_act=True, sym=False) if bits else None
    _run_and_compare({**BF16_CASE, "fuse": fuse}, quant, DType.bfloat16)
