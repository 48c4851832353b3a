"""The pure-Python parts of the stream-K small-M GPTQ kernel (`gptq_cuda_stream.py`), on the CPU: its spec's
checks, the generated source, the grid (clusters of whole strips), its plan and where `cuda_plan` routes to it.
(The kernel itself: tests/kernels/test_gptq_cuda_small_m.py, on a GPU.)"""

from __future__ import annotations

import pytest

from fusegraph.runtime.kernels import gptq_cuda_stream as st
from fusegraph.runtime.kernels.gptq_cuda_stream import (
    StreamSpec,
    stream_grid,
    stream_kernel_source,
    stream_plan,
)
from fusegraph.runtime.kernels.gptq_plan import cuda_plan


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"bits": 3}, "bits must be 4 or 8"), ({"bf16": True, "bits": 8}, "bf16 needs bits=4"),
     ({"mt": 3}, "mt must be 1 or 2"), ({"consumers": 0}, "consumers must be 1..12"),
     ({"stages": 1}, "stages 2..16"), ({"stages": 12}, "a multiple of consumers"), ({"cl": 3}, "cl must be 0, 2, 4 or 8"), ({"min_blocks": 5}, "min_blocks 1..4"),
     ({"producers": 2}, r"> 1 with cpa"), ({"producers": 3, "cpa": True}, "producers must be 1, 2 or 4")],
)  # fmt: skip
def test_stream_spec__names_the_bad_field(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"bits": 4, "bf16": False, "mt": 1, "consumers": 8, "stages": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        StreamSpec(**args)  # type: ignore[arg-type]


def test_stream_source__carries_the_spec_as_defines() -> None:
    src = stream_kernel_source(
        StreamSpec(8, False, 2, 6, 12, pad=False, zero_v1=False, min_blocks=2, cl=4, pdl=True)
    )
    for line in ("#define BITS 8", "#define MT 2", "#define NC 6", "#define S 12", "#define PAD 0",
                 "#define ZERO_V1 0", "#define MIN_BLOCKS 2", "#define CL 4", "#define PDL 1"):  # fmt: skip
        assert line in src
    assert "%(" not in src and 'extern "C" __global__ void' in src and "#include" not in src


@pytest.mark.parametrize(
    ("n", "k", "cl", "ctas", "grid"),
    [(6144, 4096, 4, 132, 128), (4096, 4096, 4, 132, 128), (28672, 4096, 4, 132, 128), (4096, 14336, 4, 132, 128),
     (6144, 4096, 2, 132, 96), (6144, 4096, 0, 132, 132), (128, 512, 0, 132, 8), (384, 1024, 4, 8, 8)],
)  # fmt: skip
def test_stream_grid__clusters_take_equal_whole_strips_else_one_run_a_cta(
    n: int, k: int, cl: int, ctas: int, grid: int
) -> None:
    spec = StreamSpec(4, False, 1, 8, 8, cl=cl)
    assert stream_grid(spec, n, k, ctas) == grid
    if cl:  # every cluster the same number of strips
        assert grid % cl == 0 and (n // 64) % (grid // cl) == 0


@pytest.mark.parametrize(
    ("m", "n", "k", "bits", "bf16", "cap"),
    [(0, 256, 512, 4, False, None), (17, 256, 512, 4, False, None), (1, 96, 512, 4, False, None),
     (1, 256, 500, 4, False, None), (1, 256, 512, 3, False, None), (1, 256, 512, 8, True, None),
     (1, 256, 512, 4, False, (8, 0))],
)  # fmt: skip
def test_stream_plan__refuses_what_the_kernel_does_not_take(
    m: int, n: int, k: int, bits: int, bf16: bool, cap: tuple[int, int] | None
) -> None:
    assert stream_plan(m, n, k, bits, bf16=bf16, cap=cap) is None


def test_cuda_plan__runs_the_stream_kernel_when_asked_and_where_its_default_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = cuda_plan(4, 6144, 4096, 4, 132, stream=True, configured=True)
    assert plan is not None and plan["kernel"] == "stream" and plan["stream"] and "xperm" not in plan
    act = cuda_plan(4, 6144, 4096, 8, 132, stream=True, act_order=True, configured=True)
    assert act is not None and act["kernel"] == "stream" and act["xperm"] and not act["xperm_pdl"]
    monkeypatch.setattr(st, "STREAM_DEFAULT", ((4, 1, 8),))
    for m, bits, cap, configured, kernel in [
        (1, 4, (9, 0), False, "stream"), (8, 4, (9, 0), False, "stream"), (9, 4, (9, 0), False, "mid"),
        (1, 8, (9, 0), False, "mid"), (1, 4, (8, 0), False, "mid"), (1, 4, (9, 0), True, "mid"),
    ]:  # fmt: skip
        got = cuda_plan(m, 6144, 4096, bits, 132, cap=cap, configured=configured)
        assert got is not None and got["kernel"] == kernel, (m, bits, cap, configured, got)
    monkeypatch.setattr(st, "STREAM_DEFAULT", ())
    assert cuda_plan(1, 6144, 4096, 4, 132, cap=(9, 0))["kernel"] == "mid"  # type: ignore[index]
