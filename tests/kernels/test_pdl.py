"""The PDL chain's switches (`fusegraph/runtime/kernels/pdl.py`) and the GPTQ kernel specs' `chain` field, on the CPU."""

from __future__ import annotations

import pytest
import torch

from fusegraph.runtime.kernels import pdl
from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec, mid_kernel_source
from fusegraph.runtime.kernels.gptq_cuda_src import KernelSpec, kernel_source

HOPPER = torch.device("cuda", 7)  # a device this test says is sm_90 (no GPU is touched)


@pytest.fixture
def hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pdl._CAP, HOPPER, (9, 0))
    monkeypatch.setattr(pdl, "gdc_wait", lambda: None)


def test_pdl_mode__off_on_the_cpu_and_before_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pdl.pdl_mode(torch.device("cpu")) == 0
    assert pdl.triton_pdl(torch.device("cpu")) == {"PDL": 0}
    ampere = torch.device("cuda", 6)
    monkeypatch.setitem(pdl._CAP, ampere, (8, 0))
    monkeypatch.setattr(pdl, "gdc_wait", lambda: None)
    assert pdl.pdl_mode(ampere) == 0 and pdl.gemm_chain(ampere) == {}


@pytest.mark.usefixtures("hopper")
@pytest.mark.parametrize(
    ("env", "mode", "chain"), [(None, 2, True), ("2", 2, True), ("1", 1, True), ("0", 0, False)]
)
def test_pdl_mode__from_the_environment(monkeypatch: pytest.MonkeyPatch, env: str | None, mode: int,
                                        chain: bool) -> None:  # fmt: skip
    if env is None:
        monkeypatch.delenv("FUSEGRAPH_PDL", raising=False)
    else:
        monkeypatch.setenv("FUSEGRAPH_PDL", env)
    assert pdl.pdl_mode(HOPPER) == mode
    assert pdl.gemm_chain(HOPPER) == ({"chain": True, "chain_l2": 1, "early": True} if chain else {})
    assert pdl.triton_pdl(HOPPER)["PDL"] == mode or (mode == 2 and not pdl._triton_launches_pdl())


@pytest.mark.usefixtures("hopper")
def test_pdl_mode__a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSEGRAPH_PDL", "yes")
    with pytest.raises(ValueError, match=r"FUSEGRAPH_PDL must be 0, 1 or 2, got 'yes'"):
        pdl.pdl_mode(HOPPER)
    monkeypatch.setenv("FUSEGRAPH_PDL", "2")
    monkeypatch.setenv("FUSEGRAPH_PDL_L2", "-1")
    with pytest.raises(ValueError, match=r"FUSEGRAPH_PDL_L2 must be 0..64 .*, got '-1'"):
        pdl.gemm_chain(HOPPER)
    monkeypatch.setenv("FUSEGRAPH_PDL_L2", "1")
    monkeypatch.setenv("FUSEGRAPH_PDL_EARLY", "small")
    with pytest.raises(ValueError, match=r"FUSEGRAPH_PDL_EARLY must be 0, 1 or 2 .*, got 'small'"):
        pdl.gemm_chain(HOPPER)
    monkeypatch.setenv("FUSEGRAPH_PDL_EARLY", "0")
    assert pdl.gemm_chain(HOPPER) == {"chain": True, "chain_l2": 1, "early": False}


def test_chain_spec__refused_with_register_pdl_or_out_of_range() -> None:
    with pytest.raises(ValueError, match="chain_l2 must be 0..64 blocks and chain not with pdl"):
        MidSpec(4, False, 1, 4, 8, True, False, True, pdl=True, chain=True)
    with pytest.raises(ValueError, match="chain_l2 must be 0..64 blocks and chain not with pdl"):
        KernelSpec(4, False, 1, 8, 2, True, False, True, chain=True, chain_l2=65)


@pytest.mark.parametrize("source", [
    lambda on: mid_kernel_source(MidSpec(4, False, 1, 4, 8, True, False, True, chain=on, chain_l2=2 * on)),
    lambda on: kernel_source(KernelSpec(4, False, 1, 8, 2, True, False, True, chain=on, chain_l2=2 * on)),
], ids=["mid", "small"])  # fmt: skip
def test_chain_source__only_prefetches_before_the_wait(source: object) -> None:
    """The chain's prologue is the kernel's first code on memory: L2 prefetches, the wait, then the trigger (after
    the wait: at most one kernel ahead of the running one)."""
    text = source(True)  # type: ignore[operator]
    assert "#define CHAIN 1\n#define CHAIN_L2 2" in text and "#define CHAIN 0" in source(False)  # type: ignore[operator]
    body = text[text.index("#if CHAIN  //") :]
    prologue = body[: body.index("#endif")]
    assert prologue.index("prefetch_l2") < prologue.index("pdl_wait()") < prologue.index("pdl_trigger()")
    assert "ldg" not in prologue and "cp16" not in prologue  # nothing read into registers or shared memory
