"""The whole model on IREE (CPU): one small compile, checked against transformers step by step,
and reused (cache hit) by `fusegraph model --backend iree`."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fusegraph.cli import main
from fusegraph.nn import QuantizationConfig, load_model
from tests.models.hf_models import hf_last_logits, make_model_dir
from tests.models.runner import NUM_BLOCKS, random_steps, run_steps
from tests.models.test_hf_models import _sequences_after_each_step

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")
pytest.importorskip("torch_mlir")


def test_model_iree__logits_and_cache_equal_transformers_and_eager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from fusegraph.runtime.iree_backend import compile_count

    # One layer keeps the compile short: Qwen2 (q/k/v biases), GPTQ act-order, fused + stacked.
    quant = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    reference = make_model_dir("qwen2", tmp_path / "m", quant=quant, num_hidden_layers=1)
    model = load_model(tmp_path / "m", dtype="float32")
    assert "model.layers.0.self_attn.qkv_proj.g_idx" in model.state_dict()
    monkeypatch.setenv("FUSEGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    steps = random_steps(reference.config.vocab_size)
    iree_manager, eager_manager = model.kv_manager(NUM_BLOCKS), model.kv_manager(NUM_BLOCKS)
    got = run_steps(model.compile(NUM_BLOCKS, backend="iree"), iree_manager, steps)
    gc.collect()  # the compiled module is gone: the caller's cache must still be its own memory
    eager = run_steps(model.compile(NUM_BLOCKS), eager_manager, steps)
    for i, seqs in enumerate(_sequences_after_each_step(steps)):
        torch.testing.assert_close(got[i], hf_last_logits(reference, seqs), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[i], eager[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iree_manager.kv_blocks, eager_manager.kv_blocks, atol=1e-5, rtol=1e-5)

    compiles = compile_count()
    prompt = ";".join(",".join(map(str, seq)) for seq in steps[0])
    args = ["model", str(tmp_path / "m"), "--logits", "--token-ids", prompt, "--backend", "iree", "--json"]
    assert main([*args, "--dtype", "float32", "--num-blocks", str(NUM_BLOCKS)]) == 0
    assert compile_count() == compiles  # the same graph: a cache hit
    logits = torch.tensor(json.loads(capsys.readouterr().out)["logits"])
    torch.testing.assert_close(logits, got[0], atol=1e-5, rtol=1e-5)
