"""`fold-act-order-permutation` on a tiny act-order GPTQ Llama, run on the CPU through the CUDA
pipeline's passes: with the fold == without it (logits of every step and the whole KV cache),
and both == transformers on the same dequantized weights. The graph that runs permutes x per
call for no matmul (o_proj's input is stored permuted by the attention)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from fusegraph.nn import QuantizationConfig, load_model
from fusegraph.passes.manager import PassStatistics
from fusegraph.runtime.pipeline import FOLD_ENV, default_pipeline

pytest.importorskip("transformers")

from tests.models.hf_models import hf_last_logits, make_model_dir  # noqa: E402 - needs transformers
from tests.models.runner import one_torch_thread, random_steps, run_steps  # noqa: E402

REPACK = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,gptq-repack"
FOLDED, UNFOLDED = f"{REPACK},fold-act-order-permutation,dce", f"{REPACK},dce"
LAYERS, NUM_BLOCKS = 2, 24
# K multiple of 128 and N of 64 everywhere (the tiled layout): hidden 128, I 256, head_dim 32
DIMS: dict[str, Any] = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=LAYERS, num_attention_heads=4,
            num_key_value_heads=2)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def llama_act_order(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """4-bit g128 act-order, asymmetric; q/k/v and gate/up share their permutation (GPTQ's way)."""
    folder = tmp_path_factory.mktemp("llama_act_order")
    quant = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False)
    return folder, make_model_dir("llama", folder, quant=quant, seed=3, **DIMS)


def _run(folder: Path, fuse: bool, pipeline: str) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
    model = load_model(folder, dtype="float32", fuse=fuse)
    manager = model.kv_manager(NUM_BLOCKS)
    run = model.compile(NUM_BLOCKS, pipeline=pipeline)
    logits = run_steps(run, manager, random_steps(model.config.vocab_size))
    return run, logits, manager.kv_blocks.clone()


@pytest.mark.parametrize("fuse", [True, False], ids=["stacked", "separate"])
def test_fold_act_order__model_equals_unfolded_on_logits_and_cache_and_equals_transformers(
    llama_act_order: tuple[Path, Any], fuse: bool
) -> None:
    folder, reference = llama_act_order
    run, logits, kv = _run(folder, fuse, FOLDED)
    _, want, kv_want = _run(folder, fuse, UNFOLDED)
    for i, (got, exp) in enumerate(zip(logits, want, strict=True)):
        torch.testing.assert_close(got, exp, atol=2e-5, rtol=2e-5, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(kv, kv_want, atol=2e-5, rtol=2e-5)
    assert kv.abs().sum() > 0
    steps = random_steps(reference.config.vocab_size)
    seqs = list(accumulate(steps, lambda acc, step: [a + s for a, s in zip(acc, step, strict=True)]))
    for i, (got, s) in enumerate(zip(logits, seqs, strict=True)):
        torch.testing.assert_close(got, hf_last_logits(reference, s), atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"step {i} vs transformers: {m}")  # fmt: skip
    ran = str(run.graph)
    # no act-order matmul gathers x per call: each reads x permuted by its producer
    assert not [line for line in ran.splitlines() if "fg.qmatmul.gptq_tiled" in line and " perm %" in line]
    assert (
        len([line for line in ran.splitlines() if "fg.attention.paged" in line and " perm %" in line])
        == LAYERS
    )
    counters = cast(PassStatistics, run.pass_stats)["fold-act-order-permutation"].counters
    assert counters["mlp"] == LAYERS and counters["attention"] == LAYERS and counters["skipped"] == 0
    assert counters["norm"] >= 2 * LAYERS  # qkv and gate_up inputs (more when projections are separate)
    assert ran.count("fg.rms_norm") == counters["norm"] + 1  # the originals are gone; the final norm stays


@pytest.mark.parametrize("fuse", [True, False], ids=["stacked", "separate"])
def test_fuse_silu_mul__model_equals_unfused_on_logits_and_cache(
    llama_act_order: tuple[Path, Any], fuse: bool
) -> None:
    folder, _ = llama_act_order
    run, logits, kv = _run(folder, fuse, FOLDED.replace(",dce", ",fuse-silu-mul,dce"))
    _, want, kv_want = _run(folder, fuse, FOLDED)
    for i, (got, exp) in enumerate(zip(logits, want, strict=True)):
        assert torch.equal(got, exp), f"step {i}"  # on the CPU the op runs the unfused ops' aten math
    assert torch.equal(kv, kv_want)
    ran = str(run.graph)
    assert ran.count("fg.silu_mul") == LAYERS and "fg.silu %" not in ran and "fg.mul" not in ran
    counters = cast(PassStatistics, run.pass_stats)["fuse-silu-mul"].counters
    assert counters == {"fused": LAYERS, "stacked": LAYERS if fuse else 0, "skipped": 0}
    assert "fg.split" not in ran  # stacked: the gate_up split is gone (its halves are read in place)


def test_fold_act_order__report_says_why_a_graph_inputs_permutation_stays() -> None:
    from fusegraph import DType, Graph, TensorType
    from fusegraph.compiler import DeviceRef
    from fusegraph.nn.linear import GPTQLinear
    from fusegraph.passes import PassManager

    cpu = DeviceRef.CPU()
    proj = GPTQLinear(128, 128, QuantizationConfig(bits=4, group_size=128, desc_act=True), DType.float16, cpu)
    with Graph("o_proj", input_types=[TensorType(DType.float16, ["m", 128], cpu)]) as g:
        g.output(proj(g.inputs[0]))
    stats = PassManager("gptq-repack,fold-act-order-permutation").run(g)
    counters = stats["fold-act-order-permutation"].counters
    assert counters == {"folded": 0, "mlp": 0, "norm": 0, "attention": 0, "skipped": 1}
    assert any("x is produced by a graph input" in r and "stays at run time" in r for r in stats.reasons)


def test_default_pipeline__folds_act_order_after_gptq_repack_unless_turned_off(monkeypatch: Any) -> None:
    for env in (FOLD_ENV, "FUSEGRAPH_FUSE_SILU_MUL"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("FUSEGRAPH_FUSE_ADD_RMS_NORM", "0")  # another helper's pass, not this test's
    silu_mul = "fuse-silu-mul,dce"
    assert default_pipeline("eager", "cuda") == FOLDED.replace("dce", silu_mul)
    assert default_pipeline("eager", "cuda", off=["fold-act-order-permutation"]) == UNFOLDED.replace(
        "dce", silu_mul
    )
    assert default_pipeline("eager", "cuda", off=["fold-act-order-permutation", "fuse-silu-mul"]) == UNFOLDED
    assert "fold-act-order" not in default_pipeline("eager", "cpu") + default_pipeline("iree", "cuda")
    monkeypatch.setenv(FOLD_ENV, "0")
    assert default_pipeline("eager", "cuda") == UNFOLDED.replace("dce", silu_mul)
    assert default_pipeline("eager", "cuda", on=["fold-act-order-permutation"]) == FOLDED.replace(
        "dce", silu_mul
    )
    monkeypatch.setenv("FUSEGRAPH_FUSE_SILU_MUL", "0")
    assert default_pipeline("eager", "cuda", on=["fold-act-order-permutation"]) == FOLDED
    monkeypatch.setenv(FOLD_ENV, "yes")
    with pytest.raises(ValueError, match="FUSEGRAPH_FOLD_ACT_ORDER must be 0 or 1, got 'yes'"):
        default_pipeline("eager", "cuda")
    with pytest.raises(ValueError, match="both in on and in off"):
        default_pipeline("eager", "cuda", on=["fuse-silu-mul"], off=["fuse-silu-mul"])
