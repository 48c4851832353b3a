"""Fused == unfused on the full AttentionWithRope layer (outputs and the whole KV cache),
after `fuse-rope-split-store` and after `unfuse-rope-split-store`; plus property tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
from fusegraph.passes import PassManager
from fusegraph.runtime import PagedKVCacheManager

CPU = DeviceRef.CPU()


@dataclass(frozen=True)
class Cfg:
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    page_size: int = 16
    num_layers: int = 2
    interleaved: bool = False
    stacked_qkv: bool = False
    gptq: QuantizationConfig | None = None  # GPTQAttentionWithRope with these settings
    steps: tuple[tuple[int, ...], ...] = ((5, 17, 1), (1, 1, 1))


def build(cfg: Cfg, fused: bool) -> tuple[Graph, AttentionWithRope, KVCacheParams]:
    hidden = cfg.n_heads * cfg.head_dim
    kv_params = KVCacheParams(dtype=DType.float32, n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                              num_layers=cfg.num_layers, page_size=cfg.page_size, devices=[CPU])  # fmt: skip
    rope = RotaryEmbedding(
        dim=hidden, n_heads=cfg.n_heads, theta=10000.0, max_seq_len=256, interleaved=cfg.interleaved
    )
    layer_args: dict[str, Any] = dict(rope=rope, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
                      hidden_size=hidden, kv_params=kv_params, stacked_qkv=cfg.stacked_qkv,
                      _fuse_rope_and_store=fused)  # fmt: skip
    attn = (
        AttentionWithRope(**layer_args)
        if cfg.gptq is None
        else GPTQAttentionWithRope(quantization_config=cfg.gptq, **layer_args)
    )
    gen = torch.Generator().manual_seed(0)
    kvw = cfg.n_kv_heads * cfg.head_dim
    shapes = {"q_proj.weight": (hidden, hidden), "k_proj.weight": (kvw, hidden),
              "v_proj.weight": (kvw, hidden), "o_proj.weight": (hidden, hidden)}  # fmt: skip
    if cfg.stacked_qkv:
        shapes = {"qkv_proj.weight": (hidden + 2 * kvw, hidden), "o_proj.weight": (hidden, hidden)}
    state = {k: torch.randn(s, generator=gen) / hidden**0.5 for k, s in shapes.items()}
    if cfg.gptq is not None:
        state = quantize_gptq_projections({k.removesuffix(".weight"): w for k, w in state.items()}, cfg.gptq)
    attn.load_state_dict(state)
    manager = PagedKVCacheManager(kv_params, num_blocks=128)
    types = [
        TensorType(DType.float32, ["total_seq_len", hidden], CPU),
        TensorType(DType.uint32, ["batch_plus_1"], CPU),
    ]
    with Graph("attn", input_types=[*types, *manager.input_types()]) as g:
        x, ro, *kv_inputs = g.inputs
        cache = PagedCacheValues(*kv_inputs)
        for layer in range(cfg.num_layers):
            x = attn(layer, x, cache, rope.freqs_cis, ro)
        g.output(x)
    return g, attn, kv_params


def run(
    g: Graph, attn: AttentionWithRope, kv_params: KVCacheParams, cfg: Cfg
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Outputs of every step and the final kv_blocks, from fixed inputs."""
    model = fusegraph.compile(g, backend="eager", device="cpu", weights=attn.state_dict(), pipeline=None)
    manager = PagedKVCacheManager(kv_params, num_blocks=128)
    seqs = [manager.claim(max_len=32) for _ in cfg.steps[0]]
    gen = torch.Generator().manual_seed(1)
    outs = []
    for tokens in cfg.steps:
        batch = manager.prepare(seqs, list(tokens))
        x = torch.randn(sum(tokens), cfg.n_heads * cfg.head_dim, generator=gen)
        outs.append(model(x, batch.row_offsets, *batch.kv_inputs)[0])
        manager.commit(seqs, list(tokens))
    return outs, manager.kv_blocks.clone()


def assert_same_numerics(
    a: Graph, b: Graph, attn: AttentionWithRope, kv_params: KVCacheParams, cfg: Cfg
) -> None:
    (out_a, kv_a), (out_b, kv_b) = run(a, attn, kv_params, cfg), run(b, attn, kv_params, cfg)
    for ya, yb in zip(out_a, out_b, strict=True):
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kv_a, kv_b, rtol=1e-5, atol=1e-5)
    assert kv_a.abs().sum() > 0  # the cache was written at all


def test_fuse_rope_split_store__fused_layer_equals_unfused_on_outputs_and_cache() -> None:
    cfg = Cfg()
    unfused, attn, kv_params = build(cfg, fused=False)
    fused = unfused.clone()
    stats = PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(fused)
    assert stats["fuse-rope-split-store"].counters == {"fused": cfg.num_layers, "skipped": 0}
    assert "fg.kv_cache.store" not in str(fused) and "fg.rope %" not in str(fused)
    assert_same_numerics(unfused, fused, attn, kv_params, cfg)


@pytest.mark.parametrize(
    ("cfg", "pipeline"),
    [
        # stacked q/k/v: canonicalize folds the q reshape [T, H, D] -> [T, H*D] with attention's
        # reshape back, so the q rope feeds attention directly (the reshape-free form)
        (Cfg(stacked_qkv=True), "canonicalize,fuse-rope-split-store,cse,dce"),
        (Cfg(stacked_qkv=True, interleaved=True, n_kv_heads=4), "canonicalize,fuse-rope-split-store"),
        # separate projections: stacking them first keeps a split for the matcher
        (Cfg(), "fuse-qkv-projections,canonicalize,fuse-rope-split-store,cse,dce"),
    ],
    ids=["stacked", "stacked_interleaved_mha", "qkv_projections_first"],
)
def test_fuse_rope_split_store__after_canonicalize_equals_unfused_on_outputs_and_cache(
    cfg: Cfg, pipeline: str
) -> None:
    unfused, attn, kv_params = build(cfg, fused=False)
    canonical = unfused.clone()
    PassManager("canonicalize").run(canonical)
    assert "fg.attention.paged %" in str(canonical)
    fused = unfused.clone()
    stats = PassManager(pipeline).run(fused)
    assert stats["fuse-rope-split-store"].counters == {"fused": cfg.num_layers, "skipped": 0}
    text = str(fused)
    assert text.count("fg.rope_split_store %") == cfg.num_layers
    assert "fg.kv_cache.store" not in text and "fg.rope %" not in text
    assert_same_numerics(unfused, fused, attn, kv_params, cfg)


def test_fuse_rope_split_store__canonicalize_first_and_last_give_the_same_graph() -> None:
    cfg = Cfg(stacked_qkv=True)
    unfused, _, _ = build(cfg, fused=False)
    first, last = unfused.clone(), unfused.clone()
    PassManager("canonicalize,fuse-rope-split-store,canonicalize,cse,dce").run(first)
    PassManager("fuse-rope-split-store,canonicalize,cse,dce").run(last)
    assert str(first) == str(last)


def test_unfuse_rope_split_store__unfused_layer_equals_fused_on_outputs_and_cache() -> None:
    cfg = Cfg(interleaved=True)
    fused, attn, kv_params = build(cfg, fused=True)
    unfused = fused.clone()
    PassManager("unfuse-rope-split-store").run(unfused)
    assert "fg.rope_split_store" not in str(unfused)
    assert_same_numerics(fused, unfused, attn, kv_params, cfg)


def test_fuse_qkv_projections__layer_numerics_preserved() -> None:
    cfg = Cfg(num_layers=1)
    g, attn, kv_params = build(cfg, fused=True)
    stacked = g.clone()
    stats = PassManager("fuse-qkv-projections,canonicalize,dce").run(stacked)
    assert stats["fuse-qkv-projections"].counters["fused"] == 1
    assert_same_numerics(g, stacked, attn, kv_params, cfg)


GPTQ = QuantizationConfig(bits=4, group_size=16, desc_act=False, sym=False)


@pytest.mark.parametrize("stacked_qkv", [False, True], ids=["separate_qkv", "stacked_qkv"])
def test_fuse_qkv_projections__gptq_layer_fuses_with_rope_split_store_and_keeps_numerics(
    stacked_qkv: bool,
) -> None:
    cfg = Cfg(gptq=GPTQ, stacked_qkv=stacked_qkv)
    unfused, attn, kv_params = build(cfg, fused=False)
    assert "g_idx" not in str(unfused)
    fused = unfused.clone()
    stats = PassManager("fuse-qkv-projections,fuse-rope-split-store,cse,dce").run(fused)
    qkv_fused = 0 if stacked_qkv else cfg.num_layers
    assert stats["fuse-qkv-projections"].counters == {"fused": qkv_fused, "skipped": 0}
    assert stats["fuse-rope-split-store"].counters == {"fused": cfg.num_layers, "skipped": 0}
    # per layer: one q/k/v qmatmul and o_proj
    assert str(fused).count("fg.qmatmul.gptq %") == 2 * cfg.num_layers
    assert_same_numerics(unfused, fused, attn, kv_params, cfg)


CONFIGS = st.builds(
    Cfg,
    n_heads=st.sampled_from([2, 4]),
    n_kv_heads=st.sampled_from([1, 2]),
    head_dim=st.sampled_from([8, 16]),
    page_size=st.sampled_from([1, 3, 16]),
    num_layers=st.integers(1, 2),
    interleaved=st.booleans(),
    steps=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(lambda t: (tuple(t), (1,) * len(t))),
)


@settings(max_examples=10, deadline=None)
@given(CONFIGS)
def test_property__fuse_matches_unfused_and_unfuse_inverts_it(cfg: Cfg) -> None:
    unfused, attn, kv_params = build(cfg, fused=False)
    fused = unfused.clone()
    PassManager("fuse-rope-split-store").run(fused)
    assert str(fused).count("fg.rope_split_store %") == cfg.num_layers
    assert_same_numerics(unfused, fused, attn, kv_params, cfg)
    back = fused.clone()
    PassManager("unfuse-rope-split-store,canonicalize").run(back)
    reference = unfused.clone()
    PassManager("canonicalize").run(reference)
    assert str(back) == str(reference)
