"""CPU tests of act-order's planning: the grid of the x permutation (`gptq_cuda_permute.permute_plan`) and
where `gptq_plan.cuda_plan` sends act-order on the Hopper wgmma kernel (with PDL after the permutation).
"""

from __future__ import annotations

import pytest

from fusegraph.runtime.kernels.gptq_cuda_permute import PERMUTE_MAX_K, permute_plan, permute_rows_source
from fusegraph.runtime.kernels.gptq_plan import cuda_plan

SHAPES = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))  # (N, K): qkv, o_proj, gate_up, down


@pytest.mark.parametrize("m", [1, 2, 5, 16, 64, 100, 256, 1024, 4000])
@pytest.mark.parametrize("k", [8, 1000, 2053, 4096, 14336, PERMUTE_MAX_K])
def test_permute_plan__covers_every_row_and_column_once_in_about_one_wave(m: int, k: int) -> None:
    p = permute_plan(m, k, 132)
    row, per_sm = (k + 7) // 8 * 8 * 2, 4
    assert p["cols"] == p["ch"] * 2048 and 1 <= p["ch"] <= 16
    assert (p["grid_x"] - 1) * p["cols"] < k <= p["grid_x"] * p["cols"]  # column slices: none empty
    assert (p["grid_y"] - 1) * p["rows"] < m <= p["grid_y"] * p["rows"]  # row tiles: none empty
    ctas = p["grid_x"] * p["grid_y"]
    assert ctas <= per_sm * 132 or p["rows"] == 1 and p["grid_x"] == 1  # more: 1 row of all K a CTA
    assert 1 <= p["nb"] <= min(4, p["rows"]) and p["smem"] == p["nb"] * row
    assert p["nb"] == 1 or per_sm * p["smem"] <= 220 * 1024  # the ring of every CTA an SM fits
    if m * -(-k // 2048) <= per_sm * 132:  # small M: one chunk a thread, one row a CTA
        assert (p["ch"], p["rows"], p["nb"]) == (1, 1, 1)
    forced = permute_plan(m, k, 132, per_sm=1, stages=3)
    assert forced["nb"] == 3 and forced["smem"] == 3 * row
    assert forced["grid_x"] * forced["grid_y"] <= max(132, m)


def test_permute_plan__refuses_what_the_kernel_cannot_take() -> None:
    for m, k in ((0, 64), (4, 0), (4, PERMUTE_MAX_K + 1)):
        with pytest.raises(ValueError, match="permute_plan"):
            permute_plan(m, k, 132)
    with pytest.raises(ValueError, match="ch must be in 1..16"):
        permute_rows_source(17, True)
    with pytest.raises(ValueError, match="nb must be in 1..8"):
        permute_rows_source(2, True, 0)
    src = permute_rows_source(3, False, 4)
    assert "#define CH 3" in src and "#define VEC 0" in src and "#define NB 4" in src
    assert "griddepcontrol.launch_dependents" in src


@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_cuda_plan__act_order_on_the_wgmma_kernel_is_launched_with_pdl(n: int, k: int) -> None:
    for m in (32, 64, 128, 256, 1024):
        plain = cuda_plan(m, n, k, 4, 132, cap=(9, 0))
        act = cuda_plan(m, n, k, 4, 132, act_order=True, cap=(9, 0))
        assert plain == {"kernel": "wgmma", "wgmma": True}
        if act is not None and act["kernel"] == "wgmma":
            assert act == plain | {"pdl": 1}
    # a configured call decides for itself; below M = 32 and off sm_90 the wgmma kernel does not run by default
    configured = cuda_plan(64, n, k, 4, 132, act_order=True, cap=(9, 0), configured=True, xperm=True)
    assert (configured or {}).get("kernel") != "wgmma"
    assert (cuda_plan(16, n, k, 4, 132, act_order=True, cap=(9, 0)) or {}).get("kernel") != "wgmma"
    assert (cuda_plan(64, n, k, 4, 132, act_order=True, cap=(8, 0)) or {}).get("kernel") != "wgmma"
