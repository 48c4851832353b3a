"""Small GPTQ attention graphs built with the ops API (qkv GPTQ matmul, rope, split, store,
paged attention, o_proj GPTQ matmul), fused or unfused, for the lowering and IREE tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.types import BufferType
from fusegraph.compiler.values import BufferValue, TensorValue
from fusegraph.ops.gptq_packing import pack

CPU = DeviceRef.CPU()
BITS, GROUP = 4, 32


@dataclass(frozen=True)
class AttnShape:
    """The sizes of the test layers (defaults: small, for tests on 2 shared cores)."""

    hidden: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    page_size: int = 4
    num_blocks: int = 24
    max_pos: int = 64


SMALL = AttnShape()
LLAMA3_8B = AttnShape(
    hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128, page_size=128, num_blocks=64, max_pos=8192
)


def kv_input_types(num_layers: int, s: AttnShape = SMALL) -> list[TensorType | BufferType]:
    """kv_blocks, cache_lengths, lookup_table (as `PagedKVCacheManager.input_types()`)."""
    shape = [s.num_blocks, 2, num_layers, s.page_size, s.n_kv_heads, s.head_dim]
    return [
        BufferType(DType.float32, shape, CPU),
        TensorType(DType.uint32, ["batch"], CPU),
        TensorType(DType.uint32, ["batch", "max_pages"], CPU),
    ]


def gptq_attention_graph(num_layers: int = 2, fused: bool = True, s: AttnShape = SMALL) -> Graph:
    """`num_layers` GPTQ attention layers chained on the hidden state, one KV cache."""
    inputs = [
        TensorType(DType.float32, ["total_seq_len", s.hidden], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
        *kv_input_types(num_layers, s),
    ]
    name = f"gptq_attn_{num_layers}l_{'fused' if fused else 'unfused'}"
    with Graph(name, input_types=inputs) as g:
        x, row_offsets, kv, lengths, lookup = g.inputs
        freqs = g.add_weight("freqs_cis", TensorType(DType.float32, [s.max_pos, s.head_dim], CPU))
        for layer in range(num_layers):
            x, kv = _layer(s, layer, x, row_offsets, freqs, kv, lengths, lookup, fused)
        g.output(x)
    return g


def _layer(
    s: AttnShape, layer: int, x: TensorValue, row_offsets: TensorValue, freqs: TensorValue, kv: BufferValue,
    lengths: TensorValue, lookup: TensorValue, fused: bool,
) -> tuple[TensorValue, BufferValue]:  # fmt: skip
    HIDDEN, N_HEADS, N_KV_HEADS, HEAD_DIM = s.hidden, s.n_heads, s.n_kv_heads, s.head_dim
    qkv_width = (N_HEADS + 2 * N_KV_HEADS) * HEAD_DIM
    qkv = _gptq_matmul(f"layers.{layer}.qkv_proj", x, HIDDEN, qkv_width)
    if fused:
        q, kv = ops.rope_split_store(
            qkv, row_offsets, freqs, kv, lengths, lookup, layer_idx=layer, interleaved=False,
            n_heads=N_HEADS, n_kv_heads=N_KV_HEADS, head_dim=HEAD_DIM,
        )  # fmt: skip
    else:  # the canonical unfused chain that fuse-rope-split-store matches
        q, k, v = ops.split(qkv, [N_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM], axis=1)
        q = _heads(q, N_HEADS, HEAD_DIM)
        q = ops.rope(q, row_offsets, lengths, freqs, interleaved=False)
        q = ops.reshape(q, ["total_seq_len", N_HEADS * HEAD_DIM])
        k = ops.rope(_heads(k, N_KV_HEADS, HEAD_DIM), row_offsets, lengths, freqs, interleaved=False)
        kv = ops.kv_cache_store(kv, k, row_offsets, lengths, lookup, layer_idx=layer, key_or_value=0)
        v = _heads(v, N_KV_HEADS, HEAD_DIM)
        kv = ops.kv_cache_store(kv, v, row_offsets, lengths, lookup, layer_idx=layer, key_or_value=1)
    q = _heads(q, N_HEADS, HEAD_DIM)
    attn = ops.paged_attention(
        q, row_offsets, kv, lengths, lookup, layer_idx=layer, scale=1 / math.sqrt(HEAD_DIM)
    )
    out = _gptq_matmul(f"layers.{layer}.o_proj", ops.reshape(attn, ["total_seq_len", HIDDEN]), HIDDEN, HIDDEN)
    return out, kv


def _heads(x: TensorValue, n: int, d: int) -> TensorValue:
    return ops.reshape(x, ["total_seq_len", n, d])


def _gptq_matmul(prefix: str, x: TensorValue, k: int, n: int) -> TensorValue:
    cur = Graph.current()
    qweight = cur.add_weight(f"{prefix}.qweight", TensorType(DType.int32, [k * BITS // 32, n], CPU))
    scales = cur.add_weight(f"{prefix}.scales", TensorType(DType.float16, [k // GROUP, n], CPU))
    qzeros = cur.add_weight(f"{prefix}.qzeros", TensorType(DType.int32, [k // GROUP, n * BITS // 32], CPU))
    return ops.qmatmul_gptq(
        x, qweight, scales, qzeros, bits=BITS, group_size=GROUP, sym=False, desc_act=False
    )


def gptq_attention_weights(graph: Graph, seed: int = 0, s: AttnShape = SMALL) -> dict[str, torch.Tensor]:
    """Random weights for every weight the graph names (GPTQ-packed projections)."""
    gen = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, t in graph.weights.items():
        if name == "freqs_cis":
            weights[name] = freqs_cis(s.max_pos, s.head_dim)
        elif name.endswith(".qweight"):
            prefix = name.removesuffix(".qweight")
            n = t.shape[1].value
            w = torch.randn(n, s.hidden, generator=gen) / math.sqrt(s.hidden)
            packed = pack(w, bits=BITS, group_size=GROUP, sym=False)
            for key in ("qweight", "scales", "qzeros"):
                weights[f"{prefix}.{key}"] = packed[key]
    return weights


def freqs_cis(max_pos: int, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """`[max_pos, head_dim]`: row p is `[cos θ0·p, sin θ0·p, cos θ1·p, sin θ1·p, …]`."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv[None]
    return torch.stack([angles.cos(), angles.sin()], dim=-1).reshape(max_pos, head_dim).float()
