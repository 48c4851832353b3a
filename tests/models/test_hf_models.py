"""Whole models loaded from HF GPTQ/dense directories equal transformers on the same
(dequantized) weights: ragged prefill and decode steps, fused and unfused, and greedy
continuation token for token."""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
import torch

from fusegraph.nn import load_model
from tests.models.hf_models import hf_last_logits
from tests.models.runner import NUM_BLOCKS, greedy, random_steps, run_steps

FAMILIES = ["llama_gptq", "qwen2_gptq", "qwen3_gptq", "mistral_dense"]


def _sequences_after_each_step(steps: list[list[list[int]]]) -> list[list[list[int]]]:
    """The whole token sequence of each row after each step (what transformers sees)."""
    return list(accumulate(steps, lambda acc, step: [a + s for a, s in zip(acc, step)]))


@pytest.mark.parametrize("family", FAMILIES)
def test_model__logits_and_cache_equal_transformers_fused_and_unfused(family: str, request: Any) -> None:
    folder, reference = request.getfixturevalue(family)
    steps = random_steps(reference.config.vocab_size)
    expected = [hf_last_logits(reference, seqs) for seqs in _sequences_after_each_step(steps)]
    caches = {}
    for fuse in (True, False):
        model = load_model(folder, dtype="float32", fuse=fuse)
        manager = model.kv_manager(NUM_BLOCKS)
        run = model.compile(NUM_BLOCKS, pipeline="default" if fuse else None)  # unfused: the graph as built
        got = run_steps(run, manager, steps)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g.dtype == torch.float32 and g.shape == e.shape, (fuse, i)
            torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4, msg=lambda m: f"fuse={fuse} step {i}: {m}")
        caches[fuse] = manager.kv_blocks.clone()
        assert ("fg.rope_split_store" in str(run.graph)) == fuse  # the graph that ran
    torch.testing.assert_close(caches[True], caches[False], atol=1e-5, rtol=1e-5)


def test_model__stacks_only_projections_with_equal_g_idx(
    llama_gptq: tuple[Path, Any], qwen3_gptq: tuple[Path, Any]
) -> None:
    stacked = load_model(llama_gptq[0], dtype="float32").state_dict()
    assert "model.layers.1.self_attn.qkv_proj.g_idx" in stacked
    assert "model.layers.1.mlp.gate_up_proj.qweight" in stacked
    separate = load_model(qwen3_gptq[0], dtype="float32").state_dict()
    assert (
        "model.layers.1.self_attn.q_proj.g_idx" in separate and "model.layers.1.mlp.up_proj.g_idx" in separate
    )
    assert not any("qkv_proj" in n or "gate_up_proj" in n for n in separate)
    assert "lm_head.weight" not in separate  # tied: the logits use model.embed_tokens.weight


@pytest.mark.parametrize("family", ["llama_gptq", "mistral_dense"])
def test_model__greedy_32_tokens_equal_transformers_generate(family: str, request: Any) -> None:
    folder, reference = request.getfixturevalue(family)
    prompts = [[3, 17, 5, 60, 2, 9, 11], [44, 8, 1]]
    model = load_model(folder, dtype="float32")
    got = greedy(model.compile(NUM_BLOCKS), model.kv_manager(NUM_BLOCKS), prompts, 32)
    for prompt, tokens in zip(prompts, got):
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
        assert tokens == out[0, len(prompt) :].tolist()
