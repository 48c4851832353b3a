"""The CUDA GPTQ kernels with groups other than 128 rows (256, 384, and one group: -1), on a GPU (skipped elsewhere).

The mid-M kernel steps its scale and zero pointers from one 128-row block's group to the next instead of dividing the
block index, starting from the group of its K slice's first block; these cases start slices inside a group (split-K
over 12 blocks of 1536 rows: slices of 3, 6 or 12 blocks against groups of 2 or 3 blocks). The small-M and wgmma
kernels divide; they are here so that every CUDA kernel meets those group sizes. The reference is
`gptq_packing.dequantize` of the checkpoint in float64 (`gptq_cuda_cases.cuda_layer`), never a kernel.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels.gptq_cuda_cases import check_eager_and_replay, cuda_layer, run_tiled

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

K, N = 1536, 256
GROUPS = (256, 384, -1)
# (m, bits, desc_act, dtype, config)
# fmt: off
CASES = [
    # the mid-M kernel: register buffers (a slice starts inside a group), sfold, the cp.async ring, 8 bits, bf16
    (16, 4, False, torch.float16, {"kernel": "cuda", "mid": True, "split_k": 4, "cluster": False, "warps": 4}),
    (13, 4, True, torch.float16, {"kernel": "cuda", "mid": True, "split_k": 2, "cluster": True, "warps": 2,
                                  "bufs": 3}),
    (5, 4, False, torch.float16, {"kernel": "cuda", "mid": True, "split_k": 4, "cluster": True, "warps": 4,
                                  "sfold": True}),
    (9, 4, False, torch.float16, {"kernel": "cuda", "mid": True, "split_k": 2, "cluster": True, "warps": 4,
                                  "cpa": 3}),
    (24, 8, False, torch.float16, {"kernel": "cuda", "mid": True, "split_k": 4, "cluster": True, "warps": 2}),
    (24, 4, False, torch.bfloat16, {"kernel": "cuda", "mid": True, "split_k": 1, "warps": 4, "bufs": 2}),
    # the small-M kernel: register buffers and the cp.async ring
    (1, 4, False, torch.float16, {"kernel": "cuda", "mid": False, "xperm": False, "split_k": 4, "cluster": True}),
    (7, 4, True, torch.float16, {"kernel": "cuda", "mid": False, "xperm": False, "split_k": 2, "cluster": True,
                                 "warps": 2, "cpa": 3}),
]
# fmt: on


@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gptq_cuda_groups__each_kernel_matches_the_math(case: tuple[Any, ...], group_size: int) -> None:
    m, bits, desc_act, dtype, config = case
    layer = cuda_layer(K, N, bits, desc_act, dtype, seed=m * 7 + bits, group_size=group_size)
    x = torch.randn(m, K, generator=layer["gen"]).to(dtype).cuda()
    ref = x.double().cpu() @ layer["w"]
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    check_eager_and_replay(lambda: run_tiled(layer, x, bits, config), ref, tol)


@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("split_k", [1, 4])
def test_gptq_cuda_groups__the_wgmma_kernel_matches_the_math(group_size: int, split_k: int) -> None:
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the wgmma kernel needs sm_90")
    layer = cuda_layer(K, N, 4, False, torch.float16, seed=11, group_size=group_size)
    x = torch.randn(64, K, generator=layer["gen"]).half().cuda()
    ref = x.double().cpu() @ layer["w"]
    config = {"kernel": "cuda", "wgmma": True, "split_k": split_k}
    check_eager_and_replay(lambda: run_tiled(layer, x, 4, config), ref, 3e-3)
