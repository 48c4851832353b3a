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
    assert pdl.pdl_mode(ampere) == 0 and pdl.chain_blocks(ampere) == 0


@pytest.mark.usefixtures("hopper")
@pytest.mark.parametrize(("env", "mode", "blocks"), [(None, 2, 2), ("2", 2, 2), ("1", 1, 2), ("0", 0, 0)])
def test_pdl_mode__from_the_environment(monkeypatch: pytest.MonkeyPatch, env: str | None, mode: int,
                                        blocks: int) -> None:  # fmt: skip
    if env is None:
        monkeypatch.delenv("FUSEGRAPH_PDL", raising=False)
    else:
        monkeypatch.setenv("FUSEGRAPH_PDL", env)
    assert pdl.pdl_mode(HOPPER) == mode
    assert pdl.chain_blocks(HOPPER) == blocks
    assert pdl.triton_pdl(HOPPER)["PDL"] == mode or (mode == 2 and not pdl._triton_launches_pdl())


@pytest.mark.usefixtures("hopper")
def test_pdl_mode__a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSEGRAPH_PDL", "yes")
    with pytest.raises(ValueError, match=r"FUSEGRAPH_PDL must be 0, 1 or 2, got 'yes'"):
        pdl.pdl_mode(HOPPER)


def test_chain_spec__refused_with_register_pdl_or_out_of_range() -> None:
    with pytest.raises(ValueError, match="chain must be 0..64 blocks, and not with pdl"):
        MidSpec(4, False, 1, 4, 8, True, False, True, pdl=True, chain=2)
    with pytest.raises(ValueError, match="chain must be 0..64 blocks, and not with pdl"):
        KernelSpec(4, False, 1, 8, 2, True, False, True, chain=65)


@pytest.mark.parametrize("source", [
    lambda chain: mid_kernel_source(MidSpec(4, False, 1, 4, 8, True, False, True, chain=chain)),
    lambda chain: kernel_source(KernelSpec(4, False, 1, 8, 2, True, False, True, chain=chain)),
], ids=["mid", "small"])  # fmt: skip
def test_chain_source__only_prefetches_before_the_wait(source: object) -> None:
    """The chain's prologue is the kernel's first code on memory: L2 prefetches, the trigger, the wait."""
    text = source(2)  # type: ignore[operator]
    assert "#define CHAIN 2" in text and "#define CHAIN 0" in source(0)  # type: ignore[operator]
    body = text[text.index("#if CHAIN  //") :]
    prologue = body[: body.index("#endif")]
    assert prologue.index("prefetch_l2") < prologue.index("pdl_trigger()") < prologue.index("pdl_wait()")
    assert "ldg" not in prologue and "cp16" not in prologue  # nothing read into registers or shared memory
