"""`fusegraph.compile(..., pipeline=...)`: the default pipeline runs before execution, on a
clone; `model.graph` is what runs; fused equals unfused on outputs and the whole KV cache."""

from __future__ import annotations

from typing import cast

import pytest
import torch

import fusegraph
from fusegraph.nn import QuantizationConfig
from fusegraph.passes.manager import PassStatistics
from fusegraph.runtime import PagedKVCacheManager, default_pipeline
from fusegraph.runtime import pipeline as pipeline_mod
from tests.passes.test_equivalence import Cfg, build

_DEFAULT = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,dce"
_GPTQ = Cfg(gptq=QuantizationConfig(bits=4, group_size=16, desc_act=False, sym=False), steps=((5, 2), (1, 1)))


def _steps(model, kv_params, cfg: Cfg) -> tuple[list[torch.Tensor], torch.Tensor]:
    manager = PagedKVCacheManager(kv_params, num_blocks=128)
    seqs = [manager.claim(max_len=32) for _ in cfg.steps[0]]
    gen = torch.Generator().manual_seed(1)
    outs = []
    for tokens in cfg.steps:
        batch = manager.prepare(seqs, list(tokens))
        x = torch.randn(sum(tokens), cfg.n_heads * cfg.head_dim, generator=gen)
        outs.append(model(x, batch.row_offsets, *batch.kv_inputs)[0])
        manager.commit(seqs, list(tokens))
    return outs, manager.kv_blocks


def test_compile__default_pipeline_fuses_qkv_and_rope_store_and_equals_the_graph_as_built() -> None:
    graph, attn, kv_params = build(_GPTQ, fused=False)
    text = str(graph)
    model = fusegraph.compile(graph, weights=attn.state_dict())
    assert model.pipeline == _DEFAULT == default_pipeline("eager", "cpu")
    assert str(graph) == text  # the caller's graph is not changed
    ran = str(model.graph)
    layers = _GPTQ.num_layers
    assert ran.count("fg.qmatmul.gptq") == 2 * layers  # stacked qkv + o_proj, was q, k, v, o
    assert ran.count("fg.rope_split_store") == layers and "fg.kv_cache.store" not in ran
    assert cast(PassStatistics, model.pass_stats)["fuse-qkv-projections"].counters["fused"] == layers
    as_built = fusegraph.compile(graph, weights=attn.state_dict(), pipeline=None)
    assert as_built.pipeline is None and str(as_built.graph) == text
    (outs, kv), (want, kv_want) = _steps(model, kv_params, _GPTQ), _steps(as_built, kv_params, _GPTQ)
    for y, y_want in zip(outs, want, strict=True):
        torch.testing.assert_close(y, y_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kv, kv_want, rtol=1e-5, atol=1e-5)
    assert kv.abs().sum() > 0


def test_compile__a_text_pipeline_runs_and_is_recorded() -> None:
    graph, attn, _ = build(Cfg(num_layers=1), fused=False)
    model = fusegraph.compile(graph, weights=attn.state_dict(), pipeline="fuse-rope-split-store,dce")
    assert model.pipeline == "fuse-rope-split-store,dce"
    stats = cast(PassStatistics, model.pass_stats)
    assert [r.name for r in stats.records] == ["fuse-rope-split-store", "dce"]


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("cse,nope", r"unknown pass 'nope' in pipeline 'cse,nope'; known passes: .*canonicalize"),
        (3, r"compile: pipeline must be 'default', None or pipeline text .* got int"),
    ],
)
def test_compile__a_bad_pipeline_is_a_clear_error(pipeline: object, message: str) -> None:
    graph, attn, _ = build(Cfg(num_layers=1), fused=False)
    with pytest.raises(ValueError, match=message):
        fusegraph.compile(graph, weights=attn.state_dict(), pipeline=pipeline)  # type: ignore[call-overload]  # bad on purpose


def test_default_pipeline__adds_gptq_repack_on_eager_cuda_only_when_registered(monkeypatch) -> None:
    registered = {name: None for name in (*_DEFAULT.split(","), "gptq-repack")}
    monkeypatch.setattr(pipeline_mod, "available_passes", lambda: registered)
    with_repack = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,gptq-repack,dce"
    assert default_pipeline("eager", "cuda") == default_pipeline("eager", "cuda:1") == with_repack
    assert default_pipeline("eager", "cpu") == default_pipeline("iree", "cuda") == _DEFAULT
    del registered["gptq-repack"]
    assert default_pipeline("eager", "cuda") == _DEFAULT
