"""The fused residual add + RMSNorm on a CUDA GPU (skipped elsewhere): the Triton kernel against the
float64 math and bitwise against the unfused kernels, and `fuse-add-rms-norm` in a tiny Llama
(dense and act-order GPTQ after the fold) compiled for CUDA: fused == unfused on logits and the KV
cache, with one kernel fewer per fused pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fusegraph.nn import QuantizationConfig, load_model
from tests.ops.test_rms_norm_perm import assert_within_ulps, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("transformers")

from tests.models.hf_models import make_model_dir  # noqa: E402 - needs transformers
from tests.runtime.test_fold_act_order_cuda import run_steps  # noqa: E402

ULPS = {torch.float16: 1.0, torch.bfloat16: 1.0, torch.float32: 8.0}
BASE = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse"
LAYERS, NUM_BLOCKS = 2, 24
DIMS: dict[str, Any] = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=LAYERS, num_attention_heads=4,
            num_key_value_heads=2)  # fmt: skip
STEPS = [
    [[(7 * i + j) % 96 for i in range(n)] for j, n in enumerate(step)] for step in ([20, 12], [1, 1], [3, 1])
]


def _operands(rows: int, d: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a, b = ((torch.randn(rows, d, generator=gen) * 3).to(dtype) for _ in range(2))
    w = (torch.rand(d, generator=gen) + 0.5).to(dtype)
    return [t.cuda() for t in (a, b, w, torch.randperm(d, generator=gen).to(torch.int32))]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("rows", "d"), [(1, 4096), (7, 4096), (64, 128), (3, 20000)])
@pytest.mark.parametrize("with_perm", [False, True])
def test_add_rms_norm_rows_cuda__equals_the_math_and_the_unfused_kernels(
    dtype: torch.dtype, rows: int, d: int, with_perm: bool
) -> None:
    from fusegraph.runtime.kernels.rms_norm import add_rms_norm_rows, rms_norm_rows

    a, b, w, perm = _operands(rows, d, dtype, seed=rows + d)
    p = perm if with_perm else None
    s, y = add_rms_norm_rows(a, b, w, 1e-5, p)
    assert torch.equal(s, a + b)  # the sum as fg.add stores it
    assert torch.equal(y, rms_norm_rows(a + b, w, 1e-5, p))  # the norm as the unfused kernel computes it
    assert_within_ulps(
        y.cpu(), reference(s.cpu(), w.cpu(), 1e-5, None if p is None else p.cpu()), ULPS[dtype]
    )


def test_add_rms_norm_custom_op_cuda__one_launch_and_opcheck() -> None:
    a, b, w, perm = _operands(4, 512, torch.float16, seed=2)
    torch.ops.fusegraph.add_rms_norm(a, b, w, perm, 1e-6)  # the first call checks perm, puts w in its order
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.ops.fusegraph.add_rms_norm(a, b, w, perm, 1e-6)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = [n for n in names if not n.startswith(("Memcpy", "Memset"))]
    assert len(kernels) == 1 and "_rms_norm_kernel" in kernels[0], names
    torch.library.opcheck(torch.ops.fusegraph.add_rms_norm.default, (a, b, w, perm, 1e-6))


@pytest.mark.parametrize("quant", [None, "act_order"])
def test_fuse_add_rms_norm_cuda__model_equals_unfused(tmp_path: Path, quant: str | None) -> None:
    q = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False) if quant else None
    make_model_dir("llama", tmp_path, quant=q, seed=7, **DIMS)
    before = f"{BASE},gptq-repack,fold-act-order-permutation" if quant else BASE
    results = []
    for pipeline in (f"{before},fuse-add-rms-norm,dce", f"{before},dce"):
        model = load_model(tmp_path, device="cuda", dtype="float16")
        manager = model.kv_manager(NUM_BLOCKS)
        run = model.compile(NUM_BLOCKS, pipeline=pipeline)
        results.append((run_steps(run, manager, STEPS), manager.kv_blocks.clone(), str(run.graph)))
    (logits, kv, text), (want, kv_want, _) = results
    assert text.count("fg.add_rms_norm") == 2 * LAYERS - 1
    for i, (got, exp) in enumerate(zip(logits, want, strict=True)):
        assert torch.equal(got, exp), f"step {i}: fused logits differ from unfused"
    assert torch.equal(kv, kv_want) and kv.abs().sum() > 0
