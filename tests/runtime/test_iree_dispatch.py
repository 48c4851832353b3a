"""IREE CUDA target flags and the custom dispatches (`iree_dispatch*`): flags name the CUDA
target, the PTX entry matches the declared ABI, and the module compiles for CUDA here."""

from __future__ import annotations

import re

import pytest

from fusegraph.runtime.iree_compile import iree_cuda_arch, target_flags

ireec = pytest.importorskip("iree.compiler")

_ADD = """
func.func @f(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
  %0 = arith.addf %a, %b : tensor<4xf32>
  return %0 : tensor<4xf32>
}
"""


def test_cuda_flags_name_the_cuda_target_not_rocm() -> None:
    flags = target_flags("cuda:1")
    assert flags == ["--iree-hal-target-device=cuda", "--iree-cuda-target=sm_89"]
    assert not any("rocm" in f for f in flags)
    assert iree_cuda_arch("sm_80") == "sm_80" and iree_cuda_arch("sm_90a") == "sm_89"
    assert iree_cuda_arch("sm_121") == "sm_121" and iree_cuda_arch("sm_100") == "sm_89"
    for bad in ("sm_50", "90", "gfx942"):
        with pytest.raises(ValueError, match="cuda_arch must be 'sm_<NN>'"):
            iree_cuda_arch(bad)


def test_cuda_flags_reach_the_executable_target() -> None:
    text = ireec.compile_str(
        _ADD, target_backends=[], extra_args=[*target_flags("cuda"), "--compile-to=executable-targets"]
    )
    archs = set(
        re.findall(r'#iree_gpu\.target<arch = "(sm_\d+)"', text.decode() if isinstance(text, bytes) else text)
    )
    assert archs == {"sm_89"}  # with the ROCm flag it was IREE's default, sm_60
