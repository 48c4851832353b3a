"""Graphs for the pass tests, built with the ops API in the canonical unfused form
(docs/internals.md), with knobs that break one guard at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops

CPU = DeviceRef.CPU()
F32 = DType.float32
U32 = DType.uint32


@dataclass(frozen=True)
class Layer:
    """Sizes of the attention layers and which guard to break (all off = fusable)."""

    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    page_size: int = 16
    num_layers: int = 1
    interleaved: bool = False
    breaks: frozenset[str] = field(default_factory=frozenset)


def layer_input_types(c: Layer) -> list[TensorType | BufferType]:
    """qkv, row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table."""
    qkv_width = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim + (c.head_dim if "split_sizes" in c.breaks else 0)
    kv_shape: list[int | str] = [
        "num_blocks",
        2,
        c.num_layers + ("layers" in c.breaks),
        c.page_size,
        c.n_kv_heads,
        c.head_dim,
    ]
    return [
        TensorType(F32, ["total_seq_len", qkv_width], CPU),
        TensorType(U32, ["batch_plus_1"], CPU),
        TensorType(F32, [256, c.head_dim], CPU),
        BufferType(F32, kv_shape, CPU),
        TensorType(U32, ["batch"], CPU),
        TensorType(U32, ["batch", "max_pages"], CPU),
    ]


def unfused_layer(c: Layer, qkv, ro, freqs, kv, lens, lookup, layer_idx: int, *, q_flat: bool = True):  # type: ignore[no-untyped-def]
    """Emit one canonical unfused chain; `c.breaks` bends it. Returns (q [T, H*D], kv, leaks);
    with `q_flat=False`, q is the rope result `[T, H, D]` (the form `canonicalize` leaves when
    attention reshapes q back)."""
    h, hk, d, b = c.n_heads, c.n_kv_heads, c.head_dim, c.breaks
    t = qkv.shape[0]
    sizes = [h * d, hk * d, hk * d] + ([d] if "split_sizes" in b else [])
    q, k, v, *_ = ops.split(qkv, sizes, axis=1)
    q_head = [t, h, d] if "head_dim" not in b else [t, 2 * h, d // 2]
    q3, k3, v3 = q.reshape(q_head), k.reshape([t, hk, d]), v.reshape([t, hk, d])
    k_freqs = freqs if "freqs" not in b else freqs * 1.0
    k_start = lens if "start_pos" not in b else lookup[:, 0]
    q_freqs = freqs if "head_dim" not in b else freqs[:, : d // 2]
    qr = ops.rope(q3, ro, lens, q_freqs, interleaved=c.interleaved)
    kr = ops.rope(k3, ro, k_start, k_freqs, interleaved=c.interleaved ^ ("interleaved" in b))
    k_kov, v_layer = (1 if "same_kov" in b else 0), (layer_idx + 1 if "layers" in b else layer_idx)
    kv1 = ops.kv_cache_store(kv, kr, ro, lens, lookup, layer_idx=layer_idx, key_or_value=k_kov)
    v_base = kv1 if "unchained" not in b else kv
    v_lookup = lookup if "metadata" not in b else lookup[:, :]
    kv2 = ops.kv_cache_store(v_base, v3, ro, lens, v_lookup, layer_idx=v_layer, key_or_value=1)
    q2 = qr.reshape([t, h * d]) if q_flat else qr
    extra = {"split_user": q, "reshape_user": k3, "rope_user": kr}
    leaks = [extra[name] for name in ("split_user", "reshape_user", "rope_user") if name in b]
    return q2, (kv2 if "unchained" not in b else kv1), leaks


def unfused_graph(c: Layer, name: str = "layer") -> Graph:
    """`c.num_layers` layers, each an unfused chain on its own slice of one qkv input."""
    with Graph(name, input_types=layer_input_types(c)) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        outs = []
        for i in range(c.num_layers):
            q, kv, leaks = unfused_layer(c, qkv, ro, freqs, kv, lens, lookup, i)
            outs += [q, *leaks]
        g.output(*outs, kv)
    return g


def attention_graph(c: Layer, name: str, *, q_flat: bool = True) -> Graph:
    """Unfused chains whose q feeds `fg.attention.paged`, as the layers build them: through
    `reshape [T, H*D] -> [T, H, D]` (`q_flat`), or straight from the q rope."""
    with Graph(name, input_types=layer_input_types(c)) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        outs = []
        for i in range(c.num_layers):
            q, kv, _ = unfused_layer(c, qkv, ro, freqs, kv, lens, lookup, i, q_flat=q_flat)
            q3 = q.reshape([qkv.shape[0], c.n_heads, c.head_dim]) if q_flat else q
            outs.append(ops.paged_attention(q3, ro, kv, lens, lookup, layer_idx=i, scale=0.25))
        g.output(*outs, kv)
    return g


def fused_graph(c: Layer, name: str = "fused") -> Graph:
    """The same layers built directly with fg.rope_split_store."""
    with Graph(name, input_types=layer_input_types(c)) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        outs = []
        for i in range(c.num_layers):
            q, kv = ops.rope_split_store(
                qkv, ro, freqs, kv, lens, lookup, layer_idx=i, interleaved=c.interleaved,
                n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim,
            )  # fmt: skip
            outs.append(q)
        g.output(*outs, kv)
    return g
