"""Act-order on the compiled CUDA GPTQ kernels (`gptq_cuda.py`) on a CUDA GPU (skipped elsewhere), against the math.

Past M = 1 (or forced with "xperm": True) x is permuted once and the small-M or mid-M kernel runs
without perm on the row-sorted weight; "xperm": False keeps the in-kernel gather, "perm_ahead" its
variant with the loads ahead (mid-M: a block early; small-M: column-chunk major); "xperm_pdl": x permuted
first (`fg_permute_rows`) and the kernel launched with programmatic dependent launch (sm_90). Both kernels,
4 and 8 bits, fp16 and bf16, eager and under CUDA-graph replay (each replay writes into a
poisoned output first). The reference is `gptq_packing.dequantize` of the act-order checkpoint
tensors (scales gathered through g_idx, checkpoint row order) in float64.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels.gptq_cuda_cases import check_eager_and_replay, cuda_layer, rel_err, run_tiled

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


_AHEAD = {"kernel": "cuda", "xperm": False, "perm_ahead": True}
_PDL = {"kernel": "cuda", "xperm": True, "xperm_pdl": True}
_XFULL = {"kernel": "cuda", "xperm": False, "xfull": True}
_GATHER = {"kernel": "cuda", "xperm": False, "mid": False, "split_k": 1, "warps": 8}
# (m, k, n, bits, dtype, config, kernel ("small" | "mid"), x permuted first)
CASES = [
    (5, 512, 256, 4, torch.float16, None, "small", True),
    (8, 1024, 256, 4, torch.float16, None, "small", True),
    (12, 512, 256, 4, torch.float16, None, "mid", True),
    (
        16,
        1024,
        512,
        4,
        torch.bfloat16,
        None,
        "small",
        True,
    ),  # one CTA of 8 warps an SM fits: the small-M kernel
    (33, 512, 256, 4, torch.float16, {"kernel": "cuda"}, "mid", True),
    (64, 1024, 256, 4, torch.float16, {"kernel": "cuda"}, "mid", True),
    (3, 512, 256, 4, torch.float16, {"kernel": "cuda", "xperm": True}, "small", True),
    (4, 512, 256, 4, torch.float16, None, "small", True),  # M=4: permuted first (+ PDL) since run C
    (1, 1024, 512, 4, torch.float16, None, "small", False),  # M=1: the gather, in one CTA of 8 warps a strip
    (16, 512, 256, 4, torch.float16, {"kernel": "cuda", "xperm": False}, "mid", False),
    (16, 512, 192, 8, torch.float16, {"kernel": "cuda"}, "mid", True),
    (64, 512, 256, 8, torch.float16, {"kernel": "cuda", "mid": True}, "mid", True),
    # the mid-M kernel's gather issued a block ahead (perm_ahead): 1, 2, 5 and 8 n-tiles, 4/2/1 strips a CTA
    (16, 512, 256, 4, torch.float16, _AHEAD | {"split_k": 1}, "mid", False),
    (5, 1024, 256, 4, torch.bfloat16, _AHEAD | {"mid": True, "split_k": 2, "cluster": False}, "mid", False),
    (40, 1024, 512, 4, torch.float16, _AHEAD | {"warps": 2, "split_k": 4}, "mid", False),
    (64, 512, 192, 8, torch.float16, _AHEAD | {"split_k": 2}, "mid", False),
    # the small-M kernel's slice gathered column-chunk major (perm_ahead): 1 and 2 n-tiles, 1-4 chunks a thread
    (1, 512, 256, 4, torch.float16, _AHEAD | {"mid": False}, "small", False),
    (4, 4096, 128, 4, torch.bfloat16, _AHEAD | {"mid": False, "split_k": 1}, "small", False),
    (13, 4096, 128, 8, torch.float16, _AHEAD | {"mid": False, "split_k": 1, "warps": 2}, "small", False),
    # x permuted by the CUDA kernel, the GEMM launched with PDL: small-M and mid-M, cluster and ticket, deeper buffers
    (1, 512, 256, 4, torch.float16, {"kernel": "cuda", "xperm": True, "xperm_pdl": True}, "small", True),
    (
        7,
        1024,
        256,
        8,
        torch.float16,
        _PDL | {"mid": False, "split_k": 2, "cluster": False, "bufs": 3},
        "small",
        True,
    ),
    (16, 1024, 512, 4, torch.float16, _PDL | {"mid": True}, "mid", True),
    (
        16,
        2048,
        256,
        4,
        torch.bfloat16,
        _PDL | {"mid": True, "bufs": 2, "split_k": 2, "cluster": False},
        "mid",
        True,
    ),
    (64, 1024, 256, 4, torch.float16, {"kernel": "cuda", "xperm_pdl": True}, "mid", True),
    # the small-M kernel's gather from all of x copied to shared memory first ("xfull"): 1 and 2 n-tiles, 8-bit, bf16
    (1, 1024, 256, 4, torch.float16, _XFULL, "small", False),
    (4, 2048, 128, 4, torch.bfloat16, _XFULL | {"split_k": 4, "cluster": False}, "small", False),
    (13, 1024, 192, 8, torch.float16, _XFULL | {"mid": False, "split_k": 1, "warps": 2}, "small", False),
    # the small-M kernel's own gather past M = 1 (one CTA of 8 warps a strip): 6, 9 and 5 rows of x, 1 and 2 n-tiles
    (6, 1024, 256, 4, torch.float16, _GATHER, "small", False),
    (9, 512, 256, 4, torch.bfloat16, _GATHER, "small", False),
    (5, 384, 128, 4, torch.float16, _GATHER, "small", False),
    # the small-M kernel after the permutation with PDL by default past K = 8192 (the mid-M kernel stops there)
    (4, 9216, 128, 4, torch.float16, None, "small", True),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gptq_cuda_act_order__matches_the_math_eager_and_in_a_cuda_graph(
    case: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fusegraph.runtime.kernels import gptq_cuda

    m, k, n, bits, dtype, config, kernel, permuted = case
    seen: list[tuple[bool, bool]] = []  # (perm given to the kernel, mid-M kernel) per launch
    permutes: list[int] = []
    pdl: list[bool] = []
    matmul, permute = gptq_cuda.gptq_cuda_matmul, gptq_cuda._permute_x

    def spy_matmul(*args: Any, **kw: Any) -> torch.Tensor | None:
        seen.append((args[4] is not None, bool(kw["plan"].get("mid")) or args[0].shape[0] > 16))
        pdl.append(
            bool(kw["plan"].get("xperm_pdl")) or bool(kw["plan"].get("chain"))
        )  # a PDL launch either way
        return matmul(*args, **kw)

    def spy_permute(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        permutes.append(x.shape[0])
        return permute(x, perm)

    monkeypatch.setattr(gptq_cuda, "gptq_cuda_matmul", spy_matmul)
    monkeypatch.setattr(gptq_cuda, "_permute_x", spy_permute)
    layer = cuda_layer(k, n, bits, True, dtype, seed=m * 7 + bits + n)
    assert layer["r"].get("perm") is not None  # act-order: the repack sorted the rows
    x = torch.randn(m, k, generator=layer["gen"]).to(dtype).cuda()
    ref = x.double().cpu() @ layer["w"]
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    for _ in range(2):
        err = rel_err(run_tiled(layer, x, bits, config), ref)
        assert err < tol, f"eager: relative error {err:.3g} >= {tol}"
    assert seen == [(not permuted, kernel == "mid")] * 2, seen
    assert permutes == ([m] * 2 if permuted else [])
    hopper = torch.cuda.get_device_capability() >= (9, 0)
    # PDL after the permutation: as asked, else by default at M ≤ 16, the mid-M kernel to K = 8192 (gptq_plan._CUDA_ACT_PDL);
    # in the runtime's PDL chain (`pdl.py`, on by default on sm_90) every launch is one ("chain", L2 prefetches only)
    want = (config or {}).get("xperm_pdl", m <= 16 and (k <= 8192 or kernel == "small"))
    chained = bool(gptq_cuda.gemm_chain(x.device))
    assert pdl == [bool(hopper and (chained or (permuted and want)))] * 2, pdl
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = run_tiled(layer, x, bits, config)
    for _ in range(3):
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        err = rel_err(y, ref)
        assert err < tol, f"graph replay: relative error {err:.3g} >= {tol}"


def test_gptq_cuda_act_order__a_plain_triton_shape_stays_on_triton_with_act_order() -> None:
    from fusegraph.runtime.kernels import gptq_cuda

    layer = cuda_layer(512, 192, 4, True, torch.float16, seed=3)
    x = torch.randn(20, 512, generator=layer["gen"]).half().cuda()
    r = layer["r"]
    # a small shape past M=16 with N not a multiple of 128 (no wgmma kernel) is below the mid-M kernel's work
    # threshold: no CUDA plan, Triton runs
    assert gptq_cuda.maybe_gptq_cuda(x, r["qweight"], layer["scales"], r["qzeros"], r["perm"], bits=4,
                                     group_size=128, zero_format="v1", config=None) is None  # fmt: skip
    assert rel_err(run_tiled(layer, x, 4, None), x.double().cpu() @ layer["w"]) < 3e-3


# (M, K, dtype, offset of x in its storage (elements), extra row stride, {per_sm, stages} overrides): 16-byte paths
# and the element paths (odd offset or stride, K % 8), K past one CTA's 2048-column slice and not a multiple of it,
# rows a CTA > 1 through rings of 2-4 rows (and 1: no copy ahead)
PERMUTE_CASES = [
    (1, 4096, torch.float16, 0, 0, {}),
    (3, 4100, torch.bfloat16, 0, 4, {}),
    (16, 14336, torch.float16, 0, 0, {}),
    (5, 1000, torch.float16, 1, 3, {}),
    (7, 2053, torch.bfloat16, 3, 0, {}),
    (600, 384, torch.float16, 0, 8, {}),
    (300, 6150, torch.float16, 8, 2, {}),
    (700, 1024, torch.float16, 0, 0, {"per_sm": 1, "stages": 3}),
    (530, 2056, torch.bfloat16, 5, 1, {"per_sm": 1, "stages": 4}),
    (270, 4096, torch.float16, 0, 0, {"per_sm": 1, "stages": 1}),
    (1024, 14336, torch.float16, 0, 0, {}),  # the default plan at down's M = 1024 (2 rows a CTA, no ring)
    (1024, 4096, torch.bfloat16, 0, 0, {"per_sm": 2}),  # 4 rows a CTA through a 4-row ring
]


@pytest.mark.parametrize("case", PERMUTE_CASES, ids=[f"perm{i}" for i in range(len(PERMUTE_CASES))])
def test_permute_rows__equals_indexing_bit_for_bit_eager_and_in_a_cuda_graph(case: tuple[Any, ...]) -> None:
    from fusegraph.runtime.kernels.gptq_cuda_permute import permute_rows

    m, k, dtype, offset, pad, kw = case
    gen = torch.Generator().manual_seed(m * 31 + k)
    base = torch.randn(offset + m * (k + pad), generator=gen).to(dtype).cuda()
    x = base[offset:].view(m, k + pad)[:, :k]  # a view: any offset, row stride k + pad
    perm = torch.randperm(k, generator=gen).to(torch.int32).cuda()
    want = x[:, perm.long()]
    y = permute_rows(x, perm, **kw)
    assert y is not None and y.is_contiguous() and torch.equal(y, want)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = permute_rows(x, perm, **kw)
    assert y is not None
    x.copy_(torch.randn(m, k, generator=gen).to(dtype))  # new values in the same storage
    y.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, x[:, perm.long()])


def test_permute_rows__declines_what_it_cannot_take() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_permute import PERMUTE_MAX_K, permute_rows

    perm = torch.arange(8, dtype=torch.int32, device="cuda")
    assert permute_rows(torch.randn(2, 8, device="cuda"), perm) is None  # fp32
    assert permute_rows(torch.randn(8, 2, device="cuda").half().t(), perm) is None  # columns strided
    big = torch.zeros(1, PERMUTE_MAX_K + 8, device="cuda", dtype=torch.float16)
    assert permute_rows(big, torch.arange(PERMUTE_MAX_K + 8, dtype=torch.int32, device="cuda")) is None
    with pytest.raises(ValueError, match="perm must be int32"):
        permute_rows(torch.zeros(2, 8, device="cuda", dtype=torch.float16), perm.long())


def test_gptq_cuda_act_order__wgmma_path_on_x_permuted_first_matches_the_math(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default dispatch at M = 64 on sm_90 (the wgmma kernel, on the row-sorted weight after one permutation),
    elsewhere whatever runs there: against the float64 dequantize-then-matmul of the checkpoint layout."""
    from fusegraph.runtime.kernels import gptq_cuda

    permutes: list[int] = []
    permute = gptq_cuda._permute_x

    def spy_permute(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        permutes.append(x.shape[0])
        return permute(x, perm)

    monkeypatch.setattr(gptq_cuda, "_permute_x", spy_permute)
    layer = cuda_layer(1024, 256, 4, True, torch.float16, seed=11)
    x = torch.randn(64, 1024, generator=layer["gen"]).half().cuda()
    ref = x.double().cpu() @ layer["w"]
    check_eager_and_replay(lambda: run_tiled(layer, x, 4, None), ref, 3e-3)
    if torch.cuda.get_device_capability() == (9, 0):
        assert permutes and set(permutes) == {64}
