"""The compiled CUDA small-M GPTQ kernel (`gptq_cuda.py`) on a CUDA GPU (skipped elsewhere), against the math.
(Forced with "mid": False: by default M 9..16 run the mid-M kernel, tested in test_gptq_cuda_mid_m.py.)

Every M in 1..16, 4-bit plain and act-order, 8-bit, bf16, both split-K reductions (cluster and
ticket), eager and under CUDA-graph replay; the reference is `gptq_packing.dequantize` of the
checkpoint tensors in float64, and every replay writes into a poisoned (NaN) output first.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels.gptq_cuda_cases import check_eager_and_replay, cuda_layer, rel_err, run_tiled

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# (k, n, bits, desc_act, dtype, config)
CASES = [
    (512, 256, 4, False, torch.float16, {"split_k": 4, "cluster": True}),
    (512, 256, 4, True, torch.float16, {"split_k": 2, "cluster": False}),
    (1024, 128, 4, False, torch.float16, {"split_k": 8, "cluster": True, "warps": 2, "l2pf": 2}),
    (512, 192, 8, False, torch.float16, {"split_k": 4, "cluster": True}),
    (512, 256, 8, True, torch.float16, {"split_k": 1}),
    (512, 256, 4, False, torch.bfloat16, {"split_k": 2, "cluster": True}),
    (1024, 64, 4, True, torch.float16, {"split_k": 2, "cluster": False, "warps": 1, "l2pf": 1}),
    # the bulk-copy ring (TMA): stages reused (8 blocks a warp), cluster and ticket, 8-bit, bf16, act-order
    (2048, 128, 4, False, torch.float16, {"split_k": 2, "cluster": True, "warps": 1, "tma": 3}),
    (2048, 192, 8, False, torch.float16, {"split_k": 1, "warps": 2, "tma": 2}),
    (1024, 256, 4, True, torch.float16, {"split_k": 2, "cluster": False, "warps": 2, "tma": 2}),
    (1024, 128, 4, False, torch.bfloat16, {"split_k": 4, "cluster": False, "tma": 4}),
    # deeper register buffers: a warp's 8 or 4 blocks over 3 or 4 buffers (the loop wraps, ends mid-round)
    (2048, 128, 4, False, torch.float16, {"split_k": 2, "cluster": True, "warps": 1, "bufs": 3}),
    (1024, 256, 4, True, torch.float16, {"split_k": 1, "warps": 2, "bufs": 4}),
    (1024, 192, 8, False, torch.float16, {"split_k": 1, "warps": 1, "bufs": 3, "min_blocks": 1}),
    (2048, 128, 4, False, torch.bfloat16, {"split_k": 2, "cluster": False, "warps": 1, "bufs": 4}),
    # the raw magic-number pairs and the bias off each block's sums ("fold", fp16): 4 and 8 bits, both reductions
    (1024, 256, 4, False, torch.float16, {"split_k": 2, "cluster": True, "fold": True}),
    (2048, 192, 8, False, torch.float16, {"split_k": 4, "cluster": False, "warps": 2, "fold": True}),
    (1024, 256, 4, True, torch.float16, {"split_k": 1, "warps": 8, "fold": True, "xfull": True}),
    # each warp's cp.async ring ("cpa"): all of a warp's blocks in flight (2 a warp, 3 stages) and stages reused
    # (8 blocks a warp over 3), cluster and ticket, 8-bit, bf16, act-order's gather, the plan's 3 buffers dropped
    (1024, 256, 4, False, torch.float16, {"split_k": 2, "cluster": True, "warps": 2, "cpa": 3}),
    (2048, 128, 4, False, torch.float16, {"split_k": 2, "cluster": False, "warps": 1, "cpa": 3}),
    (2048, 192, 8, False, torch.float16, {"split_k": 1, "warps": 4, "cpa": 4}),
    (1024, 128, 4, False, torch.bfloat16, {"split_k": 4, "cluster": True, "warps": 1, "cpa": 2}),
    (1024, 256, 4, True, torch.float16, {"split_k": 2, "cluster": True, "warps": 2, "cpa": 5}),
    (
        1024,
        256,
        4,
        True,
        torch.float16,
        {"split_k": 2, "cluster": True, "cpa": 3, "xperm": True, "xperm_pdl": True, "chain": False},
    ),
]


@pytest.mark.parametrize("m", range(1, 17))
def test_gptq_cuda__every_m_matches_the_math(m: int) -> None:
    layer = cuda_layer(512, 256, 4, m % 2 == 0, torch.float16, seed=m)
    off = m % 7  # a view at an odd offset: the wrapper copies x to 16-byte alignment first (off 0: none)
    x = torch.randn(m, 520, generator=layer["gen"]).half().cuda()[:, off : off + 512]
    ref = x.double().cpu() @ layer["w"]
    err = rel_err(
        run_tiled(
            layer, x, 4, {"kernel": "cuda", "mid": False, "split_k": 2 if m % 3 else 4, "cluster": m % 4 != 1}
        ),
        ref,
    )
    assert err < 3e-3, f"M={m}: relative error {err:.3g}"


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("m", [1, 7, 16])
def test_gptq_cuda__matches_the_math_eager_and_in_a_cuda_graph(case: tuple[Any, ...], m: int) -> None:
    k, n, bits, desc_act, dtype, config = case
    layer = cuda_layer(k, n, bits, desc_act, dtype, seed=m * 7 + bits)
    x = torch.randn(m, k, generator=layer["gen"]).to(dtype).cuda()
    ref = x.double().cpu() @ layer["w"]
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    # the small-M kernel (M 9..16 default to the mid-M one); act-order: its own gather of x (past M=4 the
    # default permutes x first: test_gptq_cuda_act_order.py)
    cfg = {"kernel": "cuda", "mid": False, "xperm": False} | config
    check_eager_and_replay(lambda: run_tiled(layer, x, bits, cfg), ref, tol)


def test_gptq_cuda__the_default_plan_takes_small_m_and_leaves_m_over_64_to_triton() -> None:
    from fusegraph.runtime.kernels import gptq_cuda

    layer = cuda_layer(512, 256, 4, False, torch.float16, seed=3)
    for m in (1, 16, 65, 80):
        x = torch.randn(m, 512, generator=layer["gen"]).half().cuda()
        before = len(gptq_cuda._KERNELS)
        err = rel_err(run_tiled(layer, x, 4, None), x.double().cpu() @ layer["w"])
        assert err < 3e-3, f"M={m}: relative error {err:.3g}"
        if m > 64:  # Triton's kernels, no new CUDA kernel (M 17..64: test_gptq_cuda_mid_m.py)
            assert len(gptq_cuda._KERNELS) == before
    assert gptq_cuda.cuda_path_status().startswith("cuda:"), gptq_cuda.cuda_path_status()


def test_gptq_cuda__refuses_what_it_cannot_run_when_forced() -> None:
    layer = cuda_layer(512, 256, 8, False, torch.bfloat16, seed=5)
    x = torch.randn(2, 512, generator=layer["gen"]).bfloat16().cuda()
    with pytest.raises(ValueError, match="kernel 'cuda' cannot run: bf16 at 8 bits"):
        run_tiled(layer, x, 8, {"kernel": "cuda"})
    y = run_tiled(layer, x, 8, None)  # the Triton path takes it
    assert rel_err(y, x.double().cpu() @ layer["w"]) < 2e-2
    layer4 = cuda_layer(512, 256, 4, False, torch.float16, seed=6)
    with pytest.raises(ValueError, match="no plan for M=65"):
        run_tiled(layer4, torch.randn(65, 512, device="cuda", dtype=torch.float16), 4, {"kernel": "cuda"})
