"""The tiled-layout GPTQ kernels (interpreted on the CPU) against the dequantize-then-matmul math.

Every path (the GEMV, the tensor-core tiles, the dequantize-then-matmul prefill) at every bit
width, with act-order, zero formats, sym checkpoints without qzeros and the split-K variants
(ticket and two-launch reduce). The reference is `gptq_packing.dequantize` of the checkpoint
tensors in float64, independent of the tiled layout. The interpreter cannot run PTX, so the
lop3/prmt asm is checked on the GPU (benchmarks/gpu.py checks every row before timing); here the
same kernels run with the shift-and-mask dequantization.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusegraph.ops.gptq_layout import repack
from fusegraph.ops.gptq_packing import dequantize, pack
from tests.kernels._interp import load_interpreted

load_interpreted("gptq_tiled_kernels")
load_interpreted("gptq_tiled_mma", kernel_deps=("gptq_tiled_kernels",))  # its helpers interpreted too
kernel = load_interpreted("gptq_tiled", kernel_deps=("gptq_tiled_kernels", "gptq_tiled_mma", "gptq_kernels"))

K, N = 256, 128
# fmt: off
CASES = [
    # (m, bits, group_size, desc_act, sym_no_zeros, zero_format, dtype, config)
    (1, 4, 128, False, False, "v1", torch.float16, {"kernel": "gemv"}),
    (1, 4, 128, True, False, "v2", torch.float16, {"kernel": "gemv", "ticket": False, "split_k": 2, "unroll": 1}),
    (2, 8, 128, True, False, "v1", torch.float16, {"kernel": "gemv", "prefetch": True, "split_k": 1, "unroll": 1}),
    (1, 3, -1, False, True, "v1", torch.float16, {"kernel": "gemv"}),
    (2, 4, 128, True, False, "v1", torch.float16, {"kernel": "gemv", "permute_x": True}),  # x permuted first
    (1, 2, 256, True, False, "v2", torch.bfloat16, {"kernel": "gemv", "split_k": 2, "unroll": 1}),
    (1, 4, 128, False, False, "v1", torch.float32, None),  # fp32 x: the GEMV hands over to the tiles
    (5, 4, 128, True, False, "v1", torch.float16, {"kernel": "mma"}),
    (6, 4, 128, True, False, "v2", torch.float16, {"kernel": "mma", "permute_x": False}),  # gathered in the tiles
    (3, 8, 128, False, True, "v2", torch.float16, {"kernel": "mma", "ticket": False, "split_k": 2}),
    (17, 3, 128, True, False, "v1", torch.float32, {"kernel": "mma", "block_m": 16, "unroll": 2, "split_k": 1}),
    (4, 2, -1, False, False, "v1", torch.float16, {"kernel": "mma", "scale_w": True, "split_k": 1}),
    # the row-order tile (one K = 128 dot a block); pf/pdl ask for the GPU only and are ignored here
    (5, 4, 128, True, False, "v1", torch.float16, {"kernel": "nat", "pf": 1, "pdl": 2}),
    (3, 8, 128, False, True, "v2", torch.float16, {"kernel": "nat", "split_k": 2, "ticket": False}),
    (17, 3, 128, True, False, "v1", torch.float32, {"kernel": "nat", "block_m": 16, "split_k": 1}),
    (2, 2, -1, False, False, "v1", torch.bfloat16, {"kernel": "nat", "block_n": 128}),
    (3, 4, 128, True, False, "v2", torch.float16, {"kernel": "dequant"}),
    (2, 8, 256, False, False, "v1", torch.bfloat16, {"kernel": "dequant", "block_n": 64}),
]
# fmt: on


def _checkpoint(
    bits: int, group_size: int, desc_act: bool, sym: bool, zero_format: str, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = pack(torch.randn(N, K, generator=gen), bits=bits, group_size=group_size, sym=sym, desc_act=desc_act,
             zero_format=zero_format)  # fmt: skip
    w = dequantize(t["qweight"], t["scales"], None if sym else t["qzeros"], t["g_idx"], bits=bits,
                   group_size=group_size, sym=sym, zero_format=zero_format, dtype=torch.float64)  # fmt: skip
    r = repack(t["qweight"], None if sym else t["qzeros"], t["g_idx"] if desc_act else None, bits=bits,
               group_size=group_size, sym=sym, desc_act=desc_act, zero_format=zero_format)  # fmt: skip
    return t, r, w


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gptq_tiled_kernel__matches_dequantized_math(case: tuple[Any, ...]) -> None:
    m, bits, gs, desc_act, sym, zf, dtype, config = case
    t, r, w = _checkpoint(bits, gs, desc_act, sym, zf, seed=m * 31 + bits)
    x = torch.randn(m, K, generator=torch.Generator().manual_seed(m)).to(dtype)
    ref = x.double() @ w
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    for _ in range(2):  # twice: the split-K workspace and tickets must come back clean
        y = kernel.gptq_tiled_matmul(x, r["qweight"], t["scales"], r["qzeros"], r.get("perm"), bits=bits,
                                     group_size=gs, zero_format=zf, config=config)  # fmt: skip
        assert y.dtype == dtype and y.shape == (m, N)
        err = ((y.double() - ref).norm() / ref.norm()).item()
        assert err < tol, f"relative error {err:.3g} >= {tol}"


def test_gptq_tiled_kernel__refuses_a_layout_that_does_not_fit() -> None:
    _, r, _ = _checkpoint(4, 128, False, False, "v1", seed=0)
    x = torch.randn(1, K + 128, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"gptq_tiled_matmul: qweight_t \[2, 32, 64\] does not fit K = 384"):
        kernel.gptq_tiled_matmul(x, r["qweight"], torch.ones(3, N), r["qzeros"], bits=4, group_size=128)
    # a group size the kernels cannot step through names itself (not a hang, a crash or a bare ZeroDivisionError)
    for gs in (0, -128, 192):
        want = f"group_size {gs} must be -1 or a positive multiple of 128 dividing K"
        with pytest.raises(ValueError, match=want):
            kernel.gptq_tiled_matmul(
                x[:, :K], r["qweight"], torch.ones(2, N), r["qzeros"], bits=4, group_size=gs
            )
    with pytest.raises(ValueError, match="split_k 3 must divide K/128 = 2"):
        kernel.gptq_tiled_matmul(x[:, :K], r["qweight"], torch.ones(2, N), r["qzeros"], bits=4, group_size=128,
                                 config={"kernel": "gemv", "split_k": 3})  # fmt: skip


def test_gptq_tiled_kernel__gemv_reads_an_x_at_an_odd_address() -> None:
    t, r, w = _checkpoint(4, 128, False, False, "v1", seed=3)
    x = torch.randn(K + 1, dtype=torch.float16)[1:].view(1, K)  # contiguous, 2-byte aligned only
    y = kernel.gptq_tiled_matmul(x, r["qweight"], t["scales"], r["qzeros"], bits=4, group_size=128,
                                 config={"kernel": "gemv"})  # fmt: skip
    ref = x.double() @ w
    assert ((y.double() - ref).norm() / ref.norm()).item() < 2e-3


def test_gptq_tiled_plan__routes_each_m_to_its_path() -> None:
    cpu = torch.device("cpu")  # 4 "SMs" off the GPU
    assert kernel.plan(1, 6144, 4096, 4, cpu)["kernel"] == "gemv"
    assert kernel.plan(8, 28672, 4096, 4, cpu)["kernel"] == "nat"
    assert kernel.plan(8, 28672, 4096, 8, cpu)["kernel"] == "mma"  # not at 8 bits
    assert kernel.plan(8, 4096 + 64, 4096, 4, cpu)["kernel"] == "mma"  # N not a multiple of 128
    assert kernel.plan(64, 28672, 4096, 4, cpu)["kernel"] == "mma"
    assert kernel.plan(512, 6144, 4096, 4, cpu)["kernel"] == "dequant"
    assert "pdl" not in kernel.plan(1, 6144, 4096, 4, cpu)  # PDL and the L2 prefetch are opt-in
    assert kernel.plan(1, 4096, 14336, 4, cpu, act_order=True)["permute_x"]  # long K: x permuted once
    assert not kernel.plan(1, 6144, 4096, 4, cpu, act_order=True)["permute_x"]
