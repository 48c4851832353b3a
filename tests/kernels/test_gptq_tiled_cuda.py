"""The tiled-layout GPTQ kernels compiled on a CUDA GPU (skipped elsewhere), against the math.

What the interpreter cannot run: the lop3/prmt PTX, the L2 prefetch, programmatic dependent
launch (Hopper) and the split-K tickets under CUDA-graph replay. The reference is
`gptq_packing.dequantize` of the checkpoint tensors in float64; every launch writes into a
poisoned (NaN) output first, so an unwritten element fails.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusegraph.ops.gptq_layout import repack
from fusegraph.ops.gptq_packing import dequantize, pack

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

K, N = 512, 256
# fmt: off
CASES = [
    # (m, bits, desc_act, dtype, config)
    (1, 4, False, torch.float16, {"kernel": "gemv", "pf": 1, "pdl": 2}),
    (1, 4, True, torch.float16, {"kernel": "gemv", "pf": 1, "pdl": 3, "split_k": 2}),
    (2, 8, False, torch.float16, {"kernel": "gemv", "pf": 1, "pdl": 1}),
    (1, 4, False, torch.bfloat16, {"kernel": "gemv", "pf": 0, "pdl": 0, "ticket": False, "split_k": 4}),
    (16, 4, False, torch.float16, {"kernel": "mma", "pf": 1, "pdl": 2}),
    (16, 4, True, torch.float16, {"kernel": "mma", "pf": 1, "pf_lines": 64, "pdl": 2}),
    (40, 8, False, torch.float16, {"kernel": "mma", "block_n": 128, "split_k": 2}),
    (12, 4, False, torch.float16, {"kernel": "mma"}),
    (64, 4, False, torch.bfloat16, {"kernel": "mma", "pf": 1, "pdl": 3}),
    (300, 4, True, torch.float16, None),  # the prefill path
    (1, 4, False, torch.float16, {"kernel": "gemv", "pf": 1, "pf_lines": 64, "pdl": 1, "split_k": 1}),
    (8, 4, False, torch.float16, None),  # 8 rows: the row-order tiles by default
    (2, 4, True, torch.float16, {"kernel": "gemv", "permute_x": True}),
    (64, 4, True, torch.float16, {"kernel": "nat", "block_m": 64, "block_n": 64, "split_k": 2, "pdl": 1}),
    (300, 8, False, torch.float16, {"kernel": "nat", "block_m": 128, "block_n": 128, "split_k": 1, "num_warps": 8}),
    (16, 4, False, torch.bfloat16, {"kernel": "nat", "block_m": 16, "block_n": 128, "pf": 1, "pdl": 2}),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gptq_tiled_cuda__matches_dequantized_math_eager_and_in_a_cuda_graph(case: tuple[Any, ...]) -> None:
    from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul

    m, bits, desc_act, dtype, config = case
    gen = torch.Generator().manual_seed(m * 7 + bits)
    t = pack(torch.randn(N, K, generator=gen), bits=bits, group_size=128, sym=False, desc_act=desc_act)
    w = dequantize(t["qweight"], t["scales"], t["qzeros"], t["g_idx"], bits=bits, group_size=128, sym=False,
                   dtype=torch.float64)  # fmt: skip
    r = repack(t["qweight"], t["qzeros"], t["g_idx"] if desc_act else None, bits=bits, group_size=128,
               sym=False, desc_act=desc_act)  # fmt: skip
    dev = {k: v.cuda() for k, v in r.items()}
    scales = t["scales"].to(dtype).cuda()
    x = torch.randn(m, K, generator=gen).to(dtype).cuda()
    ref = x.double().cpu() @ w
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3

    def run() -> torch.Tensor:
        return gptq_tiled_matmul(x, dev["qweight"], scales, dev["qzeros"], dev.get("perm"), bits=bits,
                                 group_size=128, config=config)  # fmt: skip

    for _ in range(2):  # twice: the tickets must come back zeroed
        err = ((run().double().cpu() - ref).norm() / ref.norm()).item()
        assert err < tol, f"eager: relative error {err:.3g} >= {tol}"
    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = run()
    for _ in range(3):
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        err = ((y.double().cpu() - ref).norm() / ref.norm()).item()
        assert err < tol, f"graph replay: relative error {err:.3g} >= {tol}"
