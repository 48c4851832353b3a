"""The Triton silu_mul kernel on CUDA (skipped without a GPU): against the float64 math and the
unfused aten ops (stacked and two-operand forms, partial blocks), registered as fusegraph::silu_mul's
CUDA impl, and captured in a CUDA graph (no host sync)."""

from __future__ import annotations

import pytest
import torch

import fusegraph.runtime.kernels  # noqa: F401 - registers the CUDA kernels
from fusegraph.ops.silu_mul import silu_mul_math
from fusegraph.runtime.kernels.silu_mul import silu_mul_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _reference(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    g64 = g.double()
    return g64 * torch.sigmoid(g64) * u.double()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("m", "i"), [(1, 14336), (37, 1000), (256, 2048)])
@pytest.mark.parametrize("stacked", [True, False])
def test_silu_mul_cuda__matches_the_math_and_the_unfused_ops(dtype, m, i, stacked) -> None:
    gen = torch.Generator(device="cuda").manual_seed(m + i)
    gu = (torch.randn(m, 2 * i, generator=gen, device="cuda") * 4).to(dtype)
    g, u = gu.chunk(2, dim=-1)
    y = torch.ops.fusegraph.silu_mul(gu, None) if stacked else torch.ops.fusegraph.silu_mul(g, u)
    assert y.shape == (m, i) and y.dtype == dtype and y.is_contiguous()
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(y.double(), _reference(g, u), rtol=tol, atol=tol)
    # fp16/bf16: the unfused ops' two roundings, within exp's last bit (2 ulps); fp32 has no rounding step to
    # hide Triton's exp against torch's, so a few ulps (the H200 measured up to 3.8e-7 relative, about 3 ulps)
    eps = torch.finfo(dtype).eps
    ulps = 8 if dtype == torch.float32 else 2
    torch.testing.assert_close(y, silu_mul_math(g, u), rtol=ulps * eps, atol=eps)


def test_silu_mul_cuda__captures_in_a_cuda_graph() -> None:
    gu = torch.randn(4, 2 * 512, device="cuda", dtype=torch.float16)
    want = silu_mul_rows(gu)
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    with torch.cuda.stream(side):
        silu_mul_rows(gu)  # warm up (Triton compiles) outside the capture
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        y = silu_mul_rows(gu)
    gu.mul_(0.5)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, silu_mul_rows(gu)) and not torch.equal(y, want)
