"""Constructor checks of the attention layers: each bad value is a ValueError naming the field
and the allowed values (issue #14's list for these layers)."""

from __future__ import annotations

import pytest

from fusegraph import DeviceRef, DType
from fusegraph.nn import (
    AttentionWithRope,
    GPTQAttentionWithRope,
    KVCacheParams,
    QuantizationConfig,
    RotaryEmbedding,
)

CPU = DeviceRef.CPU()


def _kwargs(**over):
    kv_params = KVCacheParams(
        dtype=DType.float32, n_kv_heads=2, head_dim=16, num_layers=1, page_size=4, devices=[CPU]
    )
    base = dict(
        rope=RotaryEmbedding(64, 4, 10000.0, 16),
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        kv_params=kv_params,
    )
    return base | over


BAD = [
    (dict(scale=0.0), r"scale must be a finite number > 0 \(or None\), got 0.0"),
    (dict(scale=-0.25), r"scale must be a finite number > 0 \(or None\), got -0.25"),
    (dict(scale=float("nan")), r"scale must be a finite number > 0 \(or None\), got nan"),
    (dict(scale=float("inf")), r"scale must be a finite number > 0 \(or None\), got inf"),
    (dict(scale="0.1"), r"scale must be a finite number > 0 \(or None\), got '0.1'"),
    (dict(num_attention_heads=4.0), r"num_attention_heads must be a positive int, got 4.0"),
    (dict(num_attention_heads="4"), r"num_attention_heads must be a positive int, got '4'"),
    (dict(num_attention_heads=True), r"num_attention_heads must be a positive int, got True"),
    (dict(num_key_value_heads=0), r"num_key_value_heads must be a positive int, got 0"),
    (dict(hidden_size=64.0), r"hidden_size must be a positive int, got 64.0"),
]


@pytest.mark.parametrize(("over", "match"), BAD)
@pytest.mark.parametrize("gptq", [False, True], ids=["dense", "gptq"])
def test_bad_constructor_values__refused_naming_the_field(over, match, gptq):
    kwargs = _kwargs(**over)
    with pytest.raises(ValueError, match=f"attention: {match}"):
        if gptq:
            GPTQAttentionWithRope(quantization_config=QuantizationConfig(bits=4, group_size=16), **kwargs)
        else:
            AttentionWithRope(**kwargs)


def test_explicit_scale__reaches_the_attention_op():
    from fusegraph import Graph, TensorType
    from fusegraph.nn import PagedCacheValues
    from fusegraph.ops.attention import PagedAttentionOp
    from fusegraph.runtime import PagedKVCacheManager

    attn = AttentionWithRope(**_kwargs(scale=0.3, sliding_window=3))
    manager = PagedKVCacheManager(attn.kv_params, num_blocks=4)
    types = [
        TensorType(DType.float32, ["t", 64], CPU),
        TensorType(DType.uint32, ["b1"], CPU),
        *manager.input_types(),
    ]
    with Graph("g", input_types=types) as g:
        x, ro, *kv = g.inputs
        g.output(attn(0, x, PagedCacheValues(*kv), attn.rope.freqs_cis, ro))
    (op,) = [o for o in g.module.walk() if isinstance(o, PagedAttentionOp)]
    assert (op.scale, op.sliding_window) == (0.3, 3)
