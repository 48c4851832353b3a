"""A whole 2-layer model on IREE (CPU) updates the caller's KV cache in place with no
whole-cache copy: its graph lets the entry consume the cache (`consume_safe`), IREE's stream IR
of the compiled module copies nothing cache-sized, and ragged prefill + decode steps on a
sentinel-filled cache give transformers' logits and eager's cache, leaving every row the
sequences do not own untouched. One compile (about 12 s on 2 cores)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")
pytest.importorskip("torch_mlir")

from fusegraph.nn import QuantizationConfig, load_model  # noqa: E402
from fusegraph.runtime.iree_inplace import consume_safe  # noqa: E402
from tests.models.hf_models import hf_last_logits, make_model_dir  # noqa: E402
from tests.models.runner import NUM_BLOCKS, random_steps, run_steps  # noqa: E402
from tests.models.test_hf_models import _sequences_after_each_step  # noqa: E402


def _sentinel_manager(model: Any) -> Any:
    manager = model.kv_manager(NUM_BLOCKS)
    manager.kv_blocks.copy_(torch.randn(manager.kv_blocks.shape, generator=torch.Generator().manual_seed(5)))
    return manager


def test_a_2_layer_model_writes_its_cache_in_place_with_no_whole_cache_copy(tmp_path: Path) -> None:
    quant = QuantizationConfig(bits=4, group_size=32, desc_act=False, sym=False)
    reference = make_model_dir("llama", tmp_path / "m", quant=quant, num_hidden_layers=2)
    model = load_model(tmp_path / "m", dtype="float32")
    phases = tmp_path / "phases"
    run = model.compile(
        NUM_BLOCKS, backend="iree", cache_dir=tmp_path / "cache",
        extra_flags=[f"--dump-compilation-phases-to={phases}"],
    )  # fmt: skip
    assert consume_safe(run.graph)
    got_manager, eager_manager = _sentinel_manager(model), _sentinel_manager(model)
    sentinel, pointer = got_manager.kv_blocks.clone(), got_manager.kv_blocks.data_ptr()
    cache_bytes = sentinel.numel() * sentinel.element_size()
    (stream,) = [p.read_text() for p in phases.glob("*.stream.mlir")]
    assert re.search(
        rf"consume %arg2 : !hal\.buffer_view -> tensor<.*> in !stream\.resource<external>\{{%c{cache_bytes}\}}",
        stream,
    )
    copies = re.findall(r"stream\.(?:cmd\.copy|cmd\.clone|async\.clone|async\.copy) .*", stream)
    assert not [c for c in copies if f"%c{cache_bytes}" in c], copies

    steps = random_steps(reference.config.vocab_size)
    got = run_steps(run, got_manager, steps)
    eager = run_steps(model.compile(NUM_BLOCKS), eager_manager, steps)
    for i, seqs in enumerate(_sequences_after_each_step(steps)):
        torch.testing.assert_close(got[i], hf_last_logits(reference, seqs), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[i], eager[i], atol=1e-5, rtol=1e-5)
    cache = got_manager.kv_blocks
    assert cache.data_ptr() == pointer
    torch.testing.assert_close(cache, eager_manager.kv_blocks, atol=1e-5, rtol=1e-5)
    page = got_manager.page_size
    owned = {
        (got_manager.pages(s)[p // page], p % page)
        for s in got_manager.sequences
        for p in range(got_manager.length(s))
    }
    changed = (cache != sentinel).flatten(4).any(-1)  # [blocks, 2, layers, slots]
    assert {(b, s) for b, _, _, s in changed.nonzero().tolist()} == owned
    assert changed.sum() == len(owned) * 2 * 2  # K and V of both layers
