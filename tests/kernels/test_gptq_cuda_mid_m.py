"""The compiled CUDA mid-M GPTQ kernel (`gptq_cuda_mid.py`) on a CUDA GPU (skipped elsewhere), against the math.

M = 17..64 (and smaller M forced onto it), 4-bit plain and act-order, 8-bit, bf16, one or more
64-column strips a CTA, no split-K, split-K through a cluster and through the ticket; eager and
under CUDA-graph replay. The reference is `gptq_packing.dequantize` of the checkpoint tensors in
float64; every replay writes into a poisoned (NaN) output first.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels.gptq_cuda_cases import check_eager_and_replay, cuda_layer, rel_err, run_tiled

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("m", [12, 17, 24, 32, 33, 48, 64])
def test_gptq_cuda_mid__its_plan_runs_the_mid_kernel_and_matches_the_math(m: int) -> None:
    from fusegraph.runtime.kernels import gptq_cuda

    layer = cuda_layer(512, 256, 4, False, torch.float16, seed=m)
    off = m % 5  # a view at an odd offset: the wrapper copies x to 16-byte alignment first (off 0: none)
    x = torch.randn(m, 520, generator=layer["gen"]).half().cuda()[:, off : off + 512]
    # M ≤ 16: the default dispatch; past 16 this small shape goes to Triton by default, so force the CUDA path
    # (the same plan, cuda_plan, without the work threshold)
    y = run_tiled(layer, x, 4, None if m <= 16 else {"kernel": "cuda"})
    err = rel_err(y, x.double().cpu() @ layer["w"])
    assert err < 3e-3, f"M={m}: relative error {err:.3g}"
    mids = [
        spec for _, spec in gptq_cuda._KERNELS if type(spec).__name__ == "MidSpec" and spec.mt == (m + 7) // 8
    ]
    assert mids, f"M={m}: no mid-M kernel was compiled"


# (m, k, n, bits, desc_act, dtype, config)
EARLY = {"chain": True, "chain_l2": 1, "early": 2, "cluster": True}  # the runtime's chain, early in any plan
CASES = [
    (64, 512, 256, 4, False, torch.float16, {"split_k": 4, "cluster": True, "warps": 4}),
    (64, 1024, 256, 4, False, torch.float16, {"split_k": 2, "cluster": False, "warps": 2}),
    (64, 1024, 128, 4, False, torch.float16, {"split_k": 1, "warps": 1}),
    (40, 1024, 512, 4, False, torch.float16, {"split_k": 8, "cluster": True, "warps": 8}),
    (33, 512, 256, 4, True, torch.float16, {"split_k": 2, "cluster": True, "warps": 2}),
    (64, 1024, 256, 4, True, torch.float16, {"split_k": 4, "cluster": False, "warps": 4}),
    (48, 512, 192, 8, False, torch.float16, {"split_k": 4, "cluster": True, "warps": 1}),
    (64, 512, 256, 8, True, torch.float16, {"split_k": 1, "warps": 4}),
    (64, 512, 256, 4, False, torch.bfloat16, {"split_k": 2, "cluster": True, "warps": 4}),
    (24, 1024, 256, 4, False, torch.bfloat16, {"split_k": 4, "cluster": False, "warps": 2}),
    (16, 512, 256, 4, False, torch.float16, {"split_k": 2, "cluster": True, "warps": 4}),  # M ≤ 16 forced
    (5, 512, 256, 4, False, torch.float16, {"split_k": 4, "cluster": False, "warps": 4}),
    # whole blocks of words ahead ("bufs"): 8 blocks a CTA over 2, 3, 4 buffers; act-order, 8-bit, bf16
    (16, 1024, 256, 4, False, torch.float16, {"split_k": 1, "warps": 4, "bufs": 2}),
    (13, 2048, 256, 4, True, torch.float16, {"split_k": 2, "cluster": True, "warps": 2, "bufs": 3}),
    (16, 1024, 192, 8, False, torch.float16, {"split_k": 1, "warps": 1, "bufs": 2}),
    (24, 1024, 256, 4, False, torch.bfloat16, {"split_k": 1, "warps": 4, "bufs": 4}),
    (9, 2048, 256, 4, False, torch.float16, {"split_k": 2, "cluster": False, "warps": 4, "bufs": 3}),
    # M ≤ 8 (one n-tile), as the default plan now runs on wide shapes: 4 and 8 bits
    (3, 1024, 512, 8, False, torch.float16, {"split_k": 2, "cluster": True, "warps": 4}),
    (1, 1024, 512, 4, False, torch.float16, {"split_k": 8, "cluster": True, "warps": 4}),
    # the scale out of the inner loop ("sfold": each block's fp32 sums scaled once), one and two n-tiles of x:
    # 4 and 8 bits, bf16, cluster and ticket, act-order gathered in the kernel (M=1) and x permuted first (M=16)
    (
        1,
        1024,
        512,
        4,
        False,
        torch.float16,
        {"split_k": 2, "cluster": True, "warps": 4, "min_blocks": 4, "sfold": True},
    ),
    (8, 2048, 256, 8, False, torch.float16, {"split_k": 2, "cluster": False, "warps": 2, "sfold": True}),
    (5, 1024, 256, 4, False, torch.bfloat16, {"split_k": 1, "warps": 4, "sfold": True}),
    (1, 1024, 256, 4, True, torch.float16, {"split_k": 2, "cluster": True, "warps": 4, "sfold": True}),
    (16, 1024, 512, 4, True, torch.float16, {"split_k": 4, "cluster": True, "warps": 4, "sfold": True}),
    # the first blocks asked of L2 ("l2pf"), act-order's x permuted first and the kernel launched with PDL
    (
        16,
        2048,
        256,
        4,
        True,
        torch.float16,
        {"split_k": 2, "cluster": True, "warps": 4, "l2pf": 6, "xperm": True, "xperm_pdl": True},
    ),
    # the cp.async ring ("cpa"): all of a slice's blocks in flight (4 blocks, 5 stages) and stages reused (8 over
    # 3 or 2), M = 1..64, cluster and ticket, 8-bit, bf16, act-order's gather and x permuted first under PDL
    (
        1,
        1024,
        512,
        4,
        False,
        torch.float16,
        {"split_k": 2, "cluster": True, "warps": 2, "cpa": 5, "sfold": True},
    ),
    (16, 2048, 256, 4, False, torch.float16, {"split_k": 2, "cluster": True, "warps": 4, "cpa": 3}),
    (64, 1024, 256, 4, False, torch.float16, {"split_k": 1, "warps": 4, "cpa": 2}),
    (33, 1024, 256, 8, False, torch.float16, {"split_k": 2, "cluster": False, "warps": 2, "cpa": 4}),
    (5, 1024, 256, 4, False, torch.bfloat16, {"split_k": 1, "warps": 4, "cpa": 3, "sfold": True}),
    (
        1,
        1024,
        256,
        4,
        True,
        torch.float16,
        {"split_k": 2, "cluster": True, "warps": 4, "cpa": 3, "sfold": True},
    ),
    (
        16,
        2048,
        256,
        4,
        True,
        torch.float16,
        {
            "split_k": 2,
            "cluster": True,
            "warps": 4,
            "cpa": 3,
            "xperm": True,
            "xperm_pdl": True,
            "chain": False,
        },
    ),
    # in the PDL chain with "early" (words and zeros before the wait, the scales after it): the words in registers
    # (group 128 a block, 4 bits at 128 registers, 8 bits, bf16), act-order's gather, the cp.async ring
    (
        1,
        1024,
        512,
        4,
        False,
        torch.float16,
        EARLY | {"split_k": 2, "warps": 4, "min_blocks": 4, "sfold": True},
    ),
    (8, 2048, 256, 8, False, torch.float16, EARLY | {"split_k": 2, "cluster": False, "warps": 2}),
    (5, 1024, 256, 4, False, torch.bfloat16, EARLY | {"split_k": 1, "warps": 4, "sfold": True}),
    (
        4,
        1024,
        512,
        4,
        True,
        torch.float16,
        EARLY | {"split_k": 4, "warps": 4, "min_blocks": 2, "xperm": False},
    ),
    (16, 2048, 256, 4, False, torch.float16, EARLY | {"split_k": 2, "warps": 4, "cpa": 3}),
    (1, 1024, 256, 4, True, torch.float16, EARLY | {"split_k": 2, "warps": 4, "cpa": 2, "sfold": True}),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gptq_cuda_mid__matches_the_math_eager_and_in_a_cuda_graph(case: tuple[Any, ...]) -> None:
    m, k, n, bits, desc_act, dtype, config = case
    layer = cuda_layer(k, n, bits, desc_act, dtype, seed=m * 7 + bits)
    x = torch.randn(m, k, generator=layer["gen"]).to(dtype).cuda()
    ref = x.double().cpu() @ layer["w"]
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    cfg = {"kernel": "cuda", "mid": True} | config
    check_eager_and_replay(lambda: run_tiled(layer, x, bits, cfg), ref, tol)


def test_gptq_cuda_mid__refuses_what_it_cannot_run_when_forced() -> None:
    layer = cuda_layer(512, 192, 4, False, torch.float16, seed=9)
    x = torch.randn(32, 512, generator=layer["gen"]).half().cuda()
    with pytest.raises(ValueError, match=r"warps 4 \(64-column strips a CTA\) must divide N/64 = 3"):
        run_tiled(layer, x, 4, {"kernel": "cuda", "warps": 4})
    x65 = torch.randn(65, 512, generator=layer["gen"]).half().cuda()
    with pytest.raises(ValueError, match="no plan for M=65"):
        run_tiled(layer, x65, 4, {"kernel": "cuda"})
    y = run_tiled(layer, x65, 4, None)  # the Triton path takes M > 64
    assert rel_err(y, x65.double().cpu() @ layer["w"]) < 3e-3
