"""`fold-act-order-permutation` on CUDA (skipped without a GPU): a tiny act-order GPTQ Llama (norms,
attention, stacked or separate MLP) compiled for CUDA with the fold on and off gives the same logits
and KV cache; with the fold no matmul permutes x per call (o_proj's input comes permuted from the
attention), and permutation kernels run only in the prefill, after its permuted norms and attention."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fusegraph.nn import QuantizationConfig, load_model
from fusegraph.runtime.kernels import paged_attention, rms_norm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("transformers")

from tests.models.hf_models import make_model_dir  # noqa: E402 - needs transformers

REPACK = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,gptq-repack"
FOLDED, UNFOLDED = f"{REPACK},fold-act-order-permutation,dce", f"{REPACK},dce"
LAYERS, NUM_BLOCKS = 2, 24
DIMS: dict[str, Any] = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=LAYERS, num_attention_heads=4,
            num_key_value_heads=2)  # fmt: skip
# a 32-token prefill (the permutation kernel's range), then decode steps
STEPS = [
    [[(7 * i + j) % 96 for i in range(n)] for j, n in enumerate(step)] for step in ([20, 12], [1, 1], [3, 1])
]
PERMUTE_KERNELS = ("permute_rows", "permute_cols")


class _CountTiled(TorchDispatchMode):
    """Counts fusegraph::qmatmul_gptq_tiled calls that get a perm (x permuted per call) and those without."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if "qmatmul_gptq_tiled" in str(func):
            self.calls["perm" if args[4] is not None else "no_perm"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def llama_act_order(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama_act_order_cuda")
    quant = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False)
    make_model_dir("llama", folder, quant=quant, seed=5, **DIMS)
    return folder


def run_steps(run: Any, manager: Any, steps: list[list[list[int]]]) -> list[torch.Tensor]:
    """`tests.models.runner.run_steps` with the token ids on the cache's device."""
    seqs = [manager.claim(max_len=64) for _ in steps[0]]
    out = []
    for step in steps:
        lengths = [len(t) for t in step]
        batch = manager.prepare(seqs, lengths)
        tokens = torch.tensor(
            [t for seq in step for t in seq], dtype=torch.int64, device=manager.kv_blocks.device
        )
        out.append(run(tokens, batch.row_offsets, *batch.kv_inputs)[0])
        manager.commit(seqs, lengths)
    return out


def _run(
    folder: Path, fuse: bool, pipeline: str
) -> tuple[list[torch.Tensor], torch.Tensor, Counter[str], int, int]:
    """Logits of every step and the KV cache; GEMM calls of the prefill step with and without perm; how
    many permutation kernels ran over all steps; the norms and attentions of the graph that permute their output."""
    model = load_model(folder, device="cuda", dtype="float16", fuse=fuse)
    run = model.compile(NUM_BLOCKS, pipeline=pipeline)
    with _CountTiled() as counts:
        first = run_steps(run, model.kv_manager(NUM_BLOCKS), STEPS[:1])
    manager = model.kv_manager(NUM_BLOCKS)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        logits = run_steps(run, manager, STEPS)
        torch.cuda.synchronize()
    torch.testing.assert_close(logits[0], first[0])  # the same first step, run twice
    permutes = sum(e.count for e in prof.key_averages() if any(p in e.key for p in PERMUTE_KERNELS))
    lines = str(run.graph).splitlines()
    permuted = sum(
        " perm %" in line and ("fg.rms_norm" in line or "fg.attention.paged" in line) for line in lines
    )
    return logits, manager.kv_blocks.clone(), counts.calls, permutes, permuted


@pytest.mark.parametrize("fuse", [True, False], ids=["stacked", "separate"])
def test_fold_act_order_cuda__equals_unfolded_and_no_matmul_permutes_x(
    llama_act_order: Path, fuse: bool
) -> None:
    logits, kv, calls, permutes, permuted = _run(llama_act_order, fuse, FOLDED)
    want, kv_want, calls_want, permutes_want, _ = _run(llama_act_order, fuse, UNFOLDED)
    for i, (got, exp) in enumerate(zip(logits, want, strict=True)):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, exp, atol=2e-2, rtol=2e-2, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(kv, kv_want, atol=1e-2, rtol=1e-2)
    assert kv.abs().sum() > 0
    assert calls["perm"] == 0  # folded: x comes permuted from the norms, the MLP weights and the attention
    assert calls_want["perm"] == calls["no_perm"] > 0  # unfolded: every GPTQ matmul permutes x
    # unfolded, every step permutes each GEMM's x in a separate kernel past M = 1; folded, only the 32-token prefill
    # runs one, after each permuted norm and attention (from their SEPARATE_PERM_ROWS rows a separate pass beats the
    # in-kernel gather or scattered store); the decode steps' norms and attentions write their outputs permuted
    rows = [sum(len(seq) for seq in step) for step in STEPS]
    assert rows[0] >= max(rms_norm.SEPARATE_PERM_ROWS, paged_attention.SEPARATE_PERM_ROWS)
    assert max(rows[1:]) < min(rms_norm.SEPARATE_PERM_ROWS, paged_attention.SEPARATE_PERM_ROWS)
    # a layer's attention and its permuted norms (two when q/k/v and gate/up are stacked, more when separate)
    assert permuted >= 3 * LAYERS and permutes == permuted < permutes_want


def test_fuse_silu_mul_cuda__the_default_pipeline_equals_it_without_the_fusion(llama_act_order: Path) -> None:
    from fusegraph.runtime.pipeline import default_pipeline

    full = default_pipeline("eager", "cuda")
    assert "fold-act-order-permutation,fuse-silu-mul" in full
    logits, kv, _, _, _ = _run(llama_act_order, True, full)
    want, kv_want, _, _, _ = _run(
        llama_act_order, True, default_pipeline("eager", "cuda", off=["fuse-silu-mul"])
    )
    for i, (got, exp) in enumerate(zip(logits, want, strict=True)):
        torch.testing.assert_close(got, exp, atol=2e-2, rtol=2e-2, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(kv, kv_want, atol=1e-2, rtol=1e-2)
    model = load_model(llama_act_order, device="cuda", dtype="float16")
    run = model.compile(NUM_BLOCKS, pipeline=full)
    run_steps(run, model.kv_manager(NUM_BLOCKS), STEPS[:1])  # Triton compiles outside the profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run_steps(run, model.kv_manager(NUM_BLOCKS), STEPS)
        torch.cuda.synchronize()
    launches = sum(e.count for e in prof.key_averages() if "_silu_mul_kernel" in e.key)
    assert launches == LAYERS * len(STEPS)
