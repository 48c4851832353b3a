"""`fuse-add-rms-norm` on tiny Llamas run on the CPU through the CUDA pipeline's passes: fused ==
unfused bitwise (logits of every step and the whole KV cache), both == transformers; with an
act-order GPTQ model after `fold-act-order-permutation` the fused ops carry the fold's perm."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from fusegraph.nn import QuantizationConfig, load_model
from fusegraph.passes.manager import PassStatistics

pytest.importorskip("transformers")

from tests.models.hf_models import hf_last_logits, make_model_dir  # noqa: E402 - needs transformers
from tests.models.runner import one_torch_thread, random_steps, run_steps  # noqa: E402

BASE = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse"
GPTQ = f"{BASE},gptq-repack,fold-act-order-permutation"
LAYERS, NUM_BLOCKS = 2, 24
DIMS: dict[str, Any] = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=LAYERS, num_attention_heads=4,
            num_key_value_heads=2)  # fmt: skip
# Each layer's two residual adds feed a norm, except the last one (the final norm reads the
# gathered last rows).
FUSED = 2 * LAYERS - 1


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def _run(folder: Path, pipeline: str) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
    model = load_model(folder, dtype="float32")
    manager = model.kv_manager(NUM_BLOCKS)
    run = model.compile(NUM_BLOCKS, pipeline=pipeline)
    logits = run_steps(run, manager, random_steps(model.config.vocab_size))
    return run, logits, manager.kv_blocks.clone()


@pytest.mark.parametrize("quant", [None, "act_order"])
def test_fuse_add_rms_norm__model_equals_unfused_bitwise_and_equals_transformers(
    tmp_path: Path, quant: str | None
) -> None:
    q = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False) if quant else None
    reference = make_model_dir("llama", tmp_path, quant=q, seed=5, **DIMS)
    before = GPTQ if quant else BASE
    run, logits, kv = _run(tmp_path, f"{before},fuse-add-rms-norm,dce")
    unfused_run, want, kv_want = _run(tmp_path, f"{before},dce")
    for i, (got, exp) in enumerate(zip(logits, want, strict=True)):
        assert torch.equal(got, exp), f"step {i}: fused logits differ from unfused"
    assert torch.equal(kv, kv_want) and kv.abs().sum() > 0
    steps = random_steps(reference.config.vocab_size)
    seqs = list(accumulate(steps, lambda acc, step: [a + s for a, s in zip(acc, step, strict=True)]))
    for i, (got, s) in enumerate(zip(logits, seqs, strict=True)):
        torch.testing.assert_close(got, hf_last_logits(reference, s), atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"step {i} vs transformers: {m}")  # fmt: skip
    text, unfused_text = str(run.graph), str(unfused_run.graph)
    assert text.count("fg.add_rms_norm") == FUSED
    assert unfused_text.count("fg.rms_norm") - text.count("fg.rms_norm") == FUSED
    # with act-order, the fold's permuted norms (q/k/v and gate/up inputs) are fused with their adds
    with_perm = [line for line in text.splitlines() if "fg.add_rms_norm" in line and " perm %" in line]
    assert len(with_perm) == (FUSED if quant else 0)
    counters = cast(PassStatistics, run.pass_stats)["fuse-add-rms-norm"].counters
    assert counters["fused"] == FUSED and counters["skipped"] == 0
