"""A Llama-style stack of two GPTQ attention blocks over one paged KV cache, checked against
a dense torch reference.

Each block is `h + self_attn(input_layernorm(h))` (HF Llama names:
`layers.{i}.input_layernorm.weight`, `layers.{i}.self_attn.q_proj.qweight`, ...). The
projections are 4-bit, group 32, act-order (`desc_act=True`) GPTQ weights made by
`quantize_gptq` from random dense weights. The script runs a ragged prefill of 5, 17 and 1
tokens and two decode steps eagerly, then compares the outputs and both layers' caches with
`fusegraph.testing.DenseAttentionReference` on the dequantized weights.

Run:
    .venv/bin/python examples/llama_gptq_attention.py
"""

from __future__ import annotations

import sys
from collections import Counter

import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.nn import (
    GPTQAttentionWithRope,
    KVCacheParams,
    LayerList,
    Module,
    PagedCacheValues,
    QuantizationConfig,
    RMSNorm,
    RotaryEmbedding,
    quantize_gptq_projections,
)
from fusegraph.ops.gptq import dequantize
from fusegraph.runtime import PagedKVCacheManager
from fusegraph.testing import DenseAttentionReference

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, N_LAYERS = 128, 8, 2, 16, 2
EPS = 1e-6
QUANT = QuantizationConfig(bits=4, group_size=32, desc_act=True)
STEPS = ([5, 17, 1], [1, 1, 1], [1, 1, 1])  # a ragged prefill, then two decode steps
CPU = DeviceRef.CPU()


class DecoderBlock(Module):
    """`h + self_attn(input_layernorm(h))`: Llama's attention half of a decoder layer."""

    def __init__(self, rope: RotaryEmbedding, kv_params: KVCacheParams) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(HIDDEN, DType.float32, eps=EPS)
        self.self_attn = GPTQAttentionWithRope(
            quantization_config=QUANT,
            rope=rope,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_size=HIDDEN,
            kv_params=kv_params,
        )


class LlamaAttentionStack(Module):
    def __init__(self, rope: RotaryEmbedding, kv_params: KVCacheParams) -> None:
        super().__init__()
        self.layers = LayerList([DecoderBlock(rope, kv_params) for _ in range(N_LAYERS)])


def random_dense_weights(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """HF-layout `[out, in]` weights of one attention layer."""
    shapes = {"q_proj": HEADS * HEAD_DIM, "k_proj": KV_HEADS * HEAD_DIM, "v_proj": KV_HEADS * HEAD_DIM}
    dense = {name: torch.randn(rows, HIDDEN, generator=gen) / HIDDEN**0.5 for name, rows in shapes.items()}
    dense["o_proj"] = torch.randn(HIDDEN, HEADS * HEAD_DIM, generator=gen) / HIDDEN**0.5
    return dense


def dequantized(state: dict[str, torch.Tensor], proj: str) -> torch.Tensor:
    """The dense `[out, in]` weight the GPTQ tensors of `proj` stand for."""
    t = {k.split(".")[-1]: v for k, v in state.items() if k.startswith(proj + ".")}
    w = dequantize(t["qweight"], t["scales"], t["qzeros"], t["g_idx"], bits=QUANT.bits,
                   group_size=QUANT.group_size, sym=QUANT.sym, zero_format=QUANT.zero_format)  # fmt: skip
    return w.float().T


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def main() -> int:
    kv_params = KVCacheParams(dtype=DType.float32, n_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                              num_layers=N_LAYERS, page_size=16, devices=[CPU])  # fmt: skip
    rope = RotaryEmbedding(dim=HIDDEN, n_heads=HEADS, theta=10000.0, max_seq_len=256, interleaved=False)
    model = LlamaAttentionStack(rope, kv_params)

    # Weights: quantize random dense weights; the reference gets them back dequantized.
    gen = torch.Generator().manual_seed(0)
    refs, norms = [], []
    for block in model.layers:
        state = quantize_gptq_projections(random_dense_weights(gen), QUANT)
        block.self_attn.load_state_dict(state)
        norm = 1 + 0.1 * torch.randn(HIDDEN, generator=gen)
        block.input_layernorm.load_state_dict({"weight": norm})
        wq, wk, wv, wo = (dequantized(state, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
        refs.append(
            DenseAttentionReference(wq, wk, wv, wo, n_heads=HEADS, n_kv_heads=KV_HEADS, head_dim=HEAD_DIM)
        )
        norms.append(norm)

    manager = PagedKVCacheManager(kv_params, num_blocks=16)
    input_types = [TensorType(DType.float32, ["total_seq_len", HIDDEN], CPU),
                   TensorType(DType.uint32, ["batch_plus_1"], CPU), *manager.input_types()]  # fmt: skip
    with Graph("llama_attention", input_types=input_types) as g:
        h, row_offsets, *kv_inputs = g.inputs
        cache = PagedCacheValues(*kv_inputs)
        for i, block in enumerate(model.layers):
            h = h + block.self_attn(i, block.input_layernorm(h), cache, rope.freqs_cis, row_offsets)
        g.output(h)
    counts = Counter(op.name for op in g.block.ops)
    print(f"graph: {len(g.weights)} weights, {counts['fg.qmatmul.gptq']} fg.qmatmul.gptq, "
          f"{counts['fg.rope_split_store']} fg.rope_split_store, {counts['fg.attention.paged']} fg.attention.paged")  # fmt: skip
    print(
        "weights of layer 1:",
        ", ".join(sorted(n for n in g.weights if n.startswith("layers.1.self_attn.q_proj"))),
    )

    compiled = fusegraph.compile(g, backend="eager", device="cpu", weights=model.state_dict())
    seqs = [manager.claim(max_len=64) for _ in STEPS[0]]
    worst = 0.0
    for step, tokens in enumerate(STEPS):
        x = torch.randn(sum(tokens), HIDDEN, generator=gen)
        batch = manager.prepare(seqs, tokens)
        (y,) = compiled(x, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, tokens)
        want = x
        for ref, norm in zip(refs, norms, strict=True):
            want = want + ref.step(list(rms_norm_reference(want, norm).split(tokens)))
        err = float((y - want).abs().max())
        worst = max(worst, err)
        print(f"step {step} tokens {tokens}: max |out - reference| = {err:.2e}")
    for layer, ref in enumerate(refs):
        for b, seq in enumerate(seqs):
            k, v = manager.gather(seq, layer_idx=layer)
            worst = max(worst, float((k - ref.keys[b]).abs().max()), float((v - ref.values[b]).abs().max()))
    print(
        f"caches: {N_LAYERS} layers x {len(seqs)} sequences of {[manager.gather(s, 0)[0].shape[0] for s in seqs]} tokens compared"
    )
    ok = worst < 1e-4
    print(("PASS" if ok else "FAIL") + f": worst error {worst:.2e} (outputs and caches, f32 tolerance 1e-4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
