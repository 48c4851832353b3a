"""A `perm` operand fed by a graph input or a weight is checked on every backend: IREE would read 0 for an entry out
of range (a silent wrong answer), so the eager and IREE runtimes refuse the same bad perm with the same message,
before anything runs, and a bad perm weight when it is bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

CPU = DeviceRef.CPU()
D = 16


def _norm_graph(perm_as_weight: bool) -> Graph:
    types = [TensorType(DType.float32, ["t", D], CPU), TensorType(DType.float32, [D], CPU)]
    perm_type = TensorType(DType.int32, [D], CPU)
    with Graph("norm_perm", input_types=types + ([] if perm_as_weight else [perm_type])) as g:
        x, w, *perm = g.inputs
        p = g.add_weight("norm.perm", perm_type) if perm_as_weight else perm[0]
        g.output(ops.rms_norm(x, w, 1e-6, perm=p))
    return g


def _options(backend: str, tmp_path: Path) -> dict[str, Any]:
    return {"cache_dir": tmp_path} if backend == "iree" else {}


def _bad_perm(at: int = 5, value: int = D + 3) -> torch.Tensor:
    perm = torch.arange(D, dtype=torch.int32).flip(0).contiguous()
    perm[at] = value
    return perm


@pytest.mark.parametrize("backend", ["eager", "iree"])
def test_a_perm_input_that_is_not_a_permutation_is_refused(backend: str, tmp_path: Path) -> None:
    model = fusegraph.compile(
        _norm_graph(False), backend=backend, device="cpu", weights={}, **_options(backend, tmp_path)
    )
    x, w = torch.randn(3, D), torch.rand(D)
    good = torch.arange(D, dtype=torch.int32).flip(0).contiguous()
    (y,) = model(x, w, good)
    want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(y, want.flip(-1))  # the call works: the refusals below are the perm's
    with pytest.raises(
        ValueError, match=r"^fg.rms_norm: perm must be a permutation of 0..15, got perm\[5\] = 19$"
    ):
        model(x, w, _bad_perm())
    with pytest.raises(
        ValueError, match=r"^fg.rms_norm: perm must be a permutation of 0..15, got perm\[2\] = perm\[5\]"
    ):
        model(x, w, _bad_perm(5, 13))


@pytest.mark.parametrize("backend", ["eager", "iree"])
def test_a_perm_weight_that_is_not_a_permutation_is_refused_when_bound(backend: str, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"^weight 'norm.perm': fg.rms_norm: perm must be a permutation of 0..15"
    ):
        fusegraph.compile(
            _norm_graph(True),
            backend=backend,
            device="cpu",
            weights={"norm.perm": _bad_perm()},
            **_options(backend, tmp_path),
        )
