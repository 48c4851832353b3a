"""The PDL chain (`fusegraph/runtime/kernels/pdl.py`) on CUDA (skipped without a GPU): a tiny GPTQ Llama compiled
with CUDA graphs under `FUSEGRAPH_PDL` 0, 1 and 2 gives bit-identical logits and KV cache over a prefill and
decode steps, plain and act-order, and on sm_90 the chained GEMM kernels really ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fusegraph.nn import QuantizationConfig, load_model
from fusegraph.runtime.kernels import gptq_cuda

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("transformers")

from tests.models.hf_models import make_model_dir  # noqa: E402 - needs transformers
from tests.runtime.test_fold_act_order_cuda import run_steps  # noqa: E402

NUM_BLOCKS = 24
DIMS: dict[str, Any] = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
# a 40-token prefill (the wgmma kernel's range on sm_90), then decode steps (the small- and mid-M kernels)
STEPS = [
    [[(5 * i + j) % 96 for i in range(n)] for j, n in enumerate(step)] for step in ([24, 16], [1, 1], [1, 1])
]


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "act_order"])
def llama(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A tiny GPTQ Llama; act-order: the 40-token prefill permutes the norms' and the attention's outputs after them
    (`fg_permute_rows`, itself in the chain)."""
    folder = tmp_path_factory.mktemp("llama_pdl_cuda")
    quant = QuantizationConfig(bits=4, group_size=128, sym=False, desc_act=request.param)
    make_model_dir("llama", folder, quant=quant, seed=9, **DIMS)
    return folder


def _run(folder: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[torch.Tensor], torch.Tensor]:
    monkeypatch.setenv("FUSEGRAPH_PDL", mode)
    model = load_model(folder, device="cuda", dtype="float16")
    run = model.compile(NUM_BLOCKS, cuda_graphs=True)
    run_steps(run, model.kv_manager(NUM_BLOCKS), STEPS)  # compiles, then captures each step's graph
    manager = model.kv_manager(NUM_BLOCKS)
    logits = [t.clone() for t in run_steps(run, manager, STEPS)]
    torch.cuda.synchronize()
    return logits, manager.kv_blocks.clone()


@pytest.mark.parametrize("mode", ["1", "2"])
def test_pdl_chain__bit_identical_to_no_chain(
    llama: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    want, kv_want = _run(llama, "0", monkeypatch)
    got, kv = _run(llama, mode, monkeypatch)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.isfinite(g).all()
        assert torch.equal(g, w), f"step {i}: max diff {float((g - w).abs().max())}"
    assert torch.equal(kv, kv_want)
    assert kv.abs().sum() > 0
    if torch.cuda.get_device_capability() >= (9, 0):
        chained = [spec for _, spec in gptq_cuda._KERNELS if spec.chain]
        assert chained, "no GPTQ kernel ran as a PDL launch on sm_90"
