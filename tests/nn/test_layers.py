"""Linear/LayerList naming, state dicts, and the attention layers' construction errors."""

import pytest
import torch

from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.nn import (
    AttentionWithRope,
    GPTQAttentionWithRope,
    KVCacheParams,
    LayerList,
    Linear,
    Module,
    QuantizationConfig,
    RotaryEmbedding,
    quantize_gptq_projections,
)

CPU = DeviceRef.CPU()


def _kv(n_kv_heads=2, head_dim=16):
    return KVCacheParams(DType.float32, n_kv_heads, head_dim, num_layers=2, page_size=4, devices=[CPU])


def _attn(cls=AttentionWithRope, **kw):
    args = dict(
        rope=RotaryEmbedding(64, 4, 1e4, 32),
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        kv_params=_kv(),
    )
    args.update(kw)
    return cls(**args)


class Block(Module):
    def __init__(self, attn):
        super().__init__()
        self.self_attn = attn


class Model(Module):
    def __init__(self, blocks):
        super().__init__()
        self.layers = LayerList(blocks)


def test_layer_list__prefixes_graph_weight_names():
    cfg = QuantizationConfig(bits=4, group_size=32)
    model = Model([Block(_attn(GPTQAttentionWithRope, quantization_config=cfg)) for _ in range(4)])
    with Graph("g", input_types=[TensorType(DType.float32, ["t", 64], CPU)]) as g:
        (x,) = g.inputs
        g.output(model.layers[3].self_attn.q_proj(x))
    # desc_act=False: no g_idx in the graph (absent means k // group_size)
    assert sorted(g.weights) == [f"layers.3.self_attn.q_proj.{s}" for s in ("qweight", "qzeros", "scales")]
    names = {n for n, _ in model.named_params()}
    assert "layers.3.self_attn.q_proj.qweight" in names and "layers.0.self_attn.o_proj.scales" in names


def test_linear__load_state_dict_checks_presence_shape_dtype():
    lin = Linear(8, 4, has_bias=True)
    w, b = torch.randn(4, 8), torch.randn(4)
    with pytest.raises(ValueError, match="missing tensor 'bias'"):
        lin.load_state_dict({"weight": w})
    with pytest.raises(ValueError, match=r"'weight': shape \[8, 4\] != expected \[4, 8\]"):
        lin.load_state_dict({"weight": w.t(), "bias": b})
    with pytest.raises(ValueError, match="'bias': dtype torch.float16 != expected torch.float32"):
        lin.load_state_dict({"weight": w, "bias": b.half()})
    with pytest.raises(ValueError, match=r"unexpected tensors \['extra'\]"):
        lin.load_state_dict({"weight": w, "bias": b, "extra": b})
    lin.load_state_dict({"weight": w, "bias": b})
    assert lin.state_dict().keys() == {"weight", "bias"}


def test_attention__state_dict_is_exactly_the_graph_weights():
    attn = _attn(has_bias=True, use_qk_norm=True)
    with pytest.raises(RuntimeError, match="not loaded"):
        attn.state_dict()
    attn.load_state_dict({n: torch.randn(s.shape) for n, s in attn.named_params()})
    assert set(attn.state_dict()) == {
        *(f"{p}_proj.{s}" for p in "qkv" for s in ("weight", "bias")),
        "o_proj.weight",
        "q_norm.weight",
        "k_norm.weight",
        "rope.freqs_cis",
    }


GPTQ_SHAPES = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64)}


@pytest.mark.parametrize("stacked_qkv", [False, True])
def test_gptq_attention__without_desc_act_graph_and_state_dict_have_no_g_idx(stacked_qkv):
    cfg = QuantizationConfig(bits=4, group_size=16, desc_act=False)
    attn = _attn(GPTQAttentionWithRope, quantization_config=cfg, stacked_qkv=stacked_qkv)
    shapes = dict(GPTQ_SHAPES)
    if stacked_qkv:
        shapes = {"qkv_proj": (128, 64), "o_proj": (64, 64)}
    state = quantize_gptq_projections({p: torch.randn(s) for p, s in shapes.items()}, cfg)
    assert torch.equal(state["o_proj.g_idx"], torch.arange(64, dtype=torch.int32) // 16)
    attn.load_state_dict(state)  # the checkpoint's trivial g_idx is accepted and dropped
    assert not [n for n in attn.state_dict() if n.endswith("g_idx")]
    assert set(attn.state_dict()) == {n for n in state if not n.endswith("g_idx")} | {"rope.freqs_cis"}
    attn.load_state_dict({n: t for n, t in state.items() if not n.endswith("g_idx")})  # absent is fine too
    with Graph("g", input_types=[TensorType(DType.float32, ["t", 64], CPU)]) as g:
        (x,) = g.inputs
        g.output(attn.o_proj(x))
    assert set(g.weights) == {"o_proj.qweight", "o_proj.qzeros", "o_proj.scales"}
    assert "g_idx" not in str(g)


def test_gptq_attention__without_desc_act_refuses_a_permuted_g_idx_naming_it():
    cfg = QuantizationConfig(bits=4, group_size=16, desc_act=False)
    attn = _attn(GPTQAttentionWithRope, quantization_config=cfg)
    state = quantize_gptq_projections({p: torch.randn(s) for p, s in GPTQ_SHAPES.items()}, cfg)
    state["k_proj.g_idx"] = state["k_proj.g_idx"].flip(0)
    with pytest.raises(ValueError, match=r"'k_proj.g_idx': a desc_act=False layer needs g_idx = "
                       r"arange\(64\) // group_size \(16\), but entry 0 is 3 \(expected 0\)"):  # fmt: skip
        attn.load_state_dict(state)
    state["k_proj.g_idx"] = torch.zeros(32, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"'k_proj.g_idx': expected g_idx of shape \[64\]"):
        attn.load_state_dict(state)


def test_gptq_attention__with_desc_act_g_idx_is_a_required_graph_weight():
    cfg = QuantizationConfig(bits=4, group_size=16, desc_act=True)
    attn = _attn(GPTQAttentionWithRope, quantization_config=cfg)
    state = quantize_gptq_projections({p: torch.randn(s) for p, s in GPTQ_SHAPES.items()}, cfg)
    with pytest.raises(ValueError, match="missing tensor 'q_proj.g_idx'"):
        attn.load_state_dict({n: t for n, t in state.items() if n != "q_proj.g_idx"})
    attn.load_state_dict(state)
    assert {f"{p}.g_idx" for p in GPTQ_SHAPES} <= set(attn.state_dict())


def test_gptq_attention__wqkv_is_max_packed_plus_scales_layout():
    cfg = QuantizationConfig(bits=4, group_size=32)
    attn = _attn(GPTQAttentionWithRope, quantization_config=cfg)
    weights = {
        "q_proj": torch.randn(64, 64),
        "k_proj": torch.randn(32, 64),
        "v_proj": torch.randn(32, 64),
        "o_proj": torch.randn(64, 64),
    }
    state = quantize_gptq_projections(weights, cfg)
    attn.load_state_dict(state)
    wqkv = attn.wqkv
    groups, group = 2, 32
    assert wqkv.dtype == torch.uint8 and list(wqkv.shape) == [groups * (group // 2 + 2), 128]
    # the first K/2 rows are the int32 words' bytes; word [r, n] of k_proj is in columns 64 + n
    words = wqkv[: 64 // 2].reshape(64 // 8, 4 * 128)
    k_bytes = words[:, 4 * 64 : 4 * 96].contiguous().view(torch.int32)
    assert torch.equal(k_bytes, state["k_proj.qweight"])
    scales = wqkv[64 // 2 :].reshape(groups, 2 * 128).contiguous().view(torch.float16)
    assert torch.equal(scales[:, 96:], state["v_proj.scales"])


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            dict(num_attention_heads=4, num_key_value_heads=3, kv_params=_kv(3)),
            r"num_attention_heads \(4\) must be divisible by num_key_value_heads \(3\)",
        ),
        (dict(kv_params=_kv(head_dim=15)), r"head_dim must be even.*head_dim=15"),
        (dict(hidden_size=48), r"hidden_size \(48\) != num_attention_heads \(4\) \* head_dim \(16\)"),
        (dict(kv_params=_kv(head_dim=8)), r"rope.head_dim \(16\) != kv_params.head_dim \(8\)"),
    ],
)
@pytest.mark.parametrize("cls", [AttentionWithRope, GPTQAttentionWithRope])
def test_attention__construction_errors_name_the_fields(cls, kw, match):
    extra = (
        {"quantization_config": QuantizationConfig(bits=4, group_size=16)}
        if cls is GPTQAttentionWithRope
        else {}
    )
    with pytest.raises(ValueError, match=match):
        _attn(cls, **extra, **kw)


def test_attention__explicit_rope_head_dim_decouples_hidden_size():
    attn = _attn(rope=RotaryEmbedding(48, 4, 1e4, 32, head_dim=16), hidden_size=48)
    assert attn.q_dim == 64 and attn.hidden_size == 48


def test_gptq_attention__group_size_not_dividing_hidden_size():
    with pytest.raises(ValueError, match=r"group_size \(48\) must divide hidden_size \(64\)"):
        _attn(GPTQAttentionWithRope, quantization_config=QuantizationConfig(bits=4, group_size=48))


@pytest.mark.parametrize(
    "bits, group_size, fmt", [(2, 16, "gptq"), (3, 32, "gptq_v2"), (4, -1, "gptq"), (8, 32, "gptq_v2")]
)
def test_gptq_linear__any_config_the_op_supports_runs(bits, group_size, fmt):
    import fusegraph
    from fusegraph.nn import GPTQLinear, quantize_gptq
    from fusegraph.ops.gptq_packing import dequantize

    cfg = QuantizationConfig(
        bits=bits, group_size=group_size, desc_act=True, sym=False, checkpoint_format=fmt
    )
    lin = GPTQLinear(64, 32, cfg, has_bias=True)
    state = {**quantize_gptq(torch.randn(32, 64), cfg), "bias": torch.randn(32)}
    lin.load_state_dict(state)
    with Graph("g", input_types=[TensorType(DType.float32, ["m", 64], CPU)]) as g:
        (x,) = g.inputs
        g.output(lin(x))
    x = torch.randn(5, 64)
    (y,) = fusegraph.compile(g, weights=lin.state_dict())(x)
    w = dequantize(
        state["qweight"],
        state["scales"],
        state["qzeros"],
        state["g_idx"],
        bits=bits,
        group_size=group_size,
        sym=False,
        zero_format=cfg.zero_format,
    )
    torch.testing.assert_close(y, x @ w + state["bias"], rtol=1e-5, atol=1e-5)


def test_gptq_attention__loads_a_saved_checkpoint_by_prefix(tmp_path):
    from fusegraph.nn import load_gptq_checkpoint, save_gptq_checkpoint

    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=True, checkpoint_format="gptq_v2")
    shapes = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64)}
    state = quantize_gptq_projections(
        {f"model.layers.0.self_attn.{p}": torch.randn(s) for p, s in shapes.items()}, cfg
    )
    save_gptq_checkpoint(tmp_path, state, cfg, hf_config=True)
    loaded_cfg, tensors = load_gptq_checkpoint(tmp_path, prefix="model.layers.0.self_attn.")
    attn = _attn(GPTQAttentionWithRope, quantization_config=loaded_cfg)
    attn.load_state_dict(tensors)
    for name, t in attn.state_dict().items():
        if name != "rope.freqs_cis":
            assert torch.equal(t, state[f"model.layers.0.self_attn.{name}"]), name
