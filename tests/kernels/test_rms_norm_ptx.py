"""The RMSNorm kernel compiled for sm_90 on the CPU (Triton's own compiler, no GPU): the PDL chain's rule holds in its
PTX. Before `griddepcontrol.wait` it may only ask L2 for lines (`prefetch.global.L2`: its weight and perm); every load
and store comes after the wait, and the next kernel is let launch (`launch_dependents`) only after it too."""

from __future__ import annotations

import pytest
import triton
from triton.backends.compiler import GPUTarget

from fusegraph.runtime.kernels.rms_norm import _rms_norm_kernel

_TYPES = {"x_ptr": "*fp16", "r_ptr": "*fp16", "s_ptr": "*fp16", "w_ptr": "*fp16", "perm_ptr": "*i32", "y_ptr": "*fp16",
          "M": "i32", "D": "i32", "stride_xm": "i32", "stride_rm": "i32", "eps": "fp32"}  # fmt: skip


def _ptx(**constexprs: object) -> list[str]:
    """The PTX lines of the kernel for these constexprs (8 warps, sm_90)."""
    names = _rms_norm_kernel.arg_names
    signature = {name: _TYPES.get(name, "constexpr") for name in names}
    src = triton.compiler.ASTSource(
        fn=_rms_norm_kernel,
        signature=signature,
        constexprs={(names.index(k),): v for k, v in constexprs.items()},
    )
    return (
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
        .asm["ptx"]
        .splitlines()
    )


def _first(lines: list[str], op: str) -> int:
    return next(i for i, line in enumerate(lines) if op in line)


@pytest.mark.parametrize(
    ("perm", "w_in_perm", "split", "residual"),
    [(False, False, 1, False), (True, True, 16, True), (True, False, 4, False)],
)
def test_rms_norm_ptx__only_l2_prefetches_before_the_wait(
    perm: bool, w_in_perm: bool, split: int, residual: bool
) -> None:
    lines = _ptx(ROWS=1, BLOCK=4096, HAS_PERM=perm, CHUNKED=False, SPLIT=split, HAS_RES=residual, PDL=2,
                 W_IN_PERM=w_in_perm)  # fmt: skip
    wait = _first(lines, "griddepcontrol.wait")
    before = lines[:wait]
    prefetches = sum("prefetch.global.L2" in line for line in before)
    assert prefetches == (2 if perm else 1)  # the perm's lines, and the weight's
    assert not any(op in line for line in before for op in ("ld.global", "st.global", "ld.shared", "atom."))
    assert _first(lines, "griddepcontrol.launch_dependents") > wait
    assert any("ld.global" in line for line in lines[wait:])


def test_rms_norm_ptx__no_prefetch_and_no_wait_outside_the_chain() -> None:
    lines = _ptx(
        ROWS=1, BLOCK=4096, HAS_PERM=True, CHUNKED=False, SPLIT=16, HAS_RES=False, PDL=0, W_IN_PERM=True
    )
    assert not any("prefetch" in line or "griddepcontrol" in line for line in lines)
