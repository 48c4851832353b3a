"""From a plan to the compiled spec of the small-M and mid-M CUDA GPTQ kernels, on the CPU (`gptq_cuda_specs.py`):
a caller's config against the plan, the PDL chain, act-order's permutation, what each GPU generation gets, and every
default plan of the Llama-3-8B shapes building a valid spec and kernel text."""

from __future__ import annotations

from typing import Any

import pytest

from fusegraph.runtime.kernels.gptq_cuda_mid import mid_kernel_source, mid_smem_bytes
from fusegraph.runtime.kernels.gptq_cuda_mid_spec import MidSpec
from fusegraph.runtime.kernels.gptq_cuda_specs import default_specs, launch_plan, mid_m_spec, small_m_spec
from fusegraph.runtime.kernels.gptq_cuda_src import KernelSpec, kernel_source, smem_bytes
from fusegraph.runtime.kernels.gptq_cuda_wgmma_spec import RswgSpec
from fusegraph.runtime.kernels.gptq_plan import cuda_plan

CHAIN = {"chain": True, "chain_l2": 1}
HOPPER, AMPERE = (9, 0), (8, 0)
KIND: dict[str, Any] = {"bits": 4, "bf16": False, "has_perm": False, "zero_v1": True}


def test_launch_plan__a_config_overrides_the_plan_and_a_ring_or_the_buffers_give_way() -> None:
    plan = {"split_k": 2, "warps": 8, "cluster": True, "bufs": 3}
    got, permuted = launch_plan(plan, {"split_k": 4, "cpa": 2}, act_order=False, chain={}, cap=HOPPER)
    assert got == {"split_k": 4, "warps": 8, "cluster": True, "cpa": 2} and not permuted
    assert plan["bufs"] == 3 and plan["split_k"] == 2  # the caller's plan is left as it was
    both, _ = launch_plan(plan, {"cpa": 2, "bufs": 3}, act_order=False, chain={}, cap=HOPPER)
    assert both["bufs"] == 3 and both["cpa"] == 2  # both asked for: kept (the spec refuses the pair)
    ring = {"split_k": 1, "warps": 8, "cluster": False, "cpa": 2}
    for key in ("bufs", "tma", "fold", "xfull", "perm_ahead"):  # options the cp.async ring excludes drop it
        assert "cpa" not in launch_plan(ring, {key: 2}, act_order=False, chain={}, cap=HOPPER)[0], key
    assert launch_plan(ring, {"warps": 4}, act_order=False, chain={}, cap=HOPPER)[0]["cpa"] == 2


@pytest.mark.parametrize(("split", "cluster", "chained"), [(2, True, True), (8, True, True), (7, True, False),
                                                           (3, True, False), (7, False, True), (4, False, True)])  # fmt: skip
def test_launch_plan__the_chain_but_not_on_clusters_of_3_5_6_or_7(
    split: int, cluster: bool, chained: bool
) -> None:
    plan = {"split_k": split, "warps": 4, "cluster": cluster}
    got, _ = launch_plan(plan, {}, act_order=False, chain=CHAIN, cap=HOPPER)
    assert (got.get("chain"), got.get("chain_l2")) == ((True, 1) if chained else (None, None))
    unchained, _ = launch_plan(plan, {"chain": False}, act_order=False, chain=CHAIN, cap=HOPPER)
    # a config's "chain" over the runtime's
    assert unchained["chain"] is False and "chain_l2" not in unchained


def test_launch_plan__act_order_permutes_x_first_and_pdl_after_it_only_outside_the_chain() -> None:
    plan = {"split_k": 2, "warps": 2, "cluster": True, "mid": True, "xperm": True, "xperm_pdl": True}
    got, permuted = launch_plan(plan, {}, act_order=True, chain={}, cap=HOPPER)
    assert permuted and "xperm" not in got and got["xperm_pdl"] is True
    got, permuted = launch_plan(plan, {}, act_order=True, chain=CHAIN, cap=HOPPER)
    assert permuted and got["xperm_pdl"] is False and got["chain"] is True  # kernels ahead may still write
    assert launch_plan(plan, {}, act_order=True, chain={}, cap=AMPERE)[0]["xperm_pdl"] is False
    # the kernel's own gather: no permutation, no PDL after one
    gather, permuted = launch_plan(plan, {"xperm": False}, act_order=True, chain={}, cap=HOPPER)
    assert not permuted and "xperm_pdl" not in gather
    plain, permuted = launch_plan(plan, {}, act_order=False, chain={}, cap=HOPPER)
    assert not permuted and "xperm_pdl" not in plain


def test_small_m_spec__what_each_gpu_and_dtype_gets() -> None:
    plan = {"split_k": 2, "warps": 8, "cluster": True, "l2pf": 2, "fold": True, "min_blocks": 1}
    spec = small_m_spec(plan, m=1, bps=16, cap=HOPPER, **KIND)
    got = (spec.mt, spec.cluster, spec.l2pf, spec.fold, spec.min_blocks, spec.bufs)
    assert got == (1, True, 2, True, 1, 2)
    assert small_m_spec(plan, m=9, bps=16, cap=HOPPER, **KIND).mt == 2
    old = small_m_spec(plan, m=1, bps=16, cap=AMPERE, **KIND)
    assert not old.cluster and old.l2pf == 0  # clusters and L2 prefetches: sm_90 only
    assert not small_m_spec(plan, m=1, bps=16, cap=HOPPER, **(KIND | {"bf16": True})).fold  # fp16 only
    assert not small_m_spec(plan, m=1, bps=257, cap=HOPPER, **KIND).fold  # past 32 blocks a warp
    assert small_m_spec(plan, m=1, bps=256, cap=HOPPER, **KIND).fold
    gather = {"split_k": 1, "warps": 4, "cluster": False, "xfull": True, "perm_ahead": False}
    assert small_m_spec(gather, m=1, bps=8, cap=HOPPER, **(KIND | {"has_perm": True})).xfull
    assert not small_m_spec(gather, m=1, bps=8, cap=HOPPER, **KIND).xfull  # no perm, no gather
    # PDL after our own permutation (registers before the wait) or the chain (L2 prefetches only), never both
    pdl = small_m_spec(plan | {"xperm_pdl": True} | CHAIN, m=1, bps=16, cap=HOPPER, **KIND)
    assert (pdl.pdl, pdl.chain, pdl.chain_l2) == (True, False, 0)
    chained = small_m_spec(plan | CHAIN, m=1, bps=16, cap=HOPPER, **KIND)
    assert (chained.pdl, chained.chain, chained.chain_l2) == (False, True, 1)
    assert not small_m_spec(plan | CHAIN, m=1, bps=16, cap=AMPERE, **KIND).chain


def test_early_in_the_chain__which_kernels_load_words_before_their_wait() -> None:
    early = CHAIN | {"early": True}  # the runtime's chain by default (`pdl.gemm_chain`)
    small = {"split_k": 2, "warps": 8, "cluster": True, "min_blocks": 1, "cpa": 2}
    plan, _ = launch_plan(small, {}, act_order=False, chain=early, cap=HOPPER)
    spec = small_m_spec(plan, m=1, bps=16, cap=HOPPER, **KIND)
    assert (spec.pdl, spec.chain, spec.chain_l2) == (True, False, 0)
    # a config's own "early" stands against the chain's; act-order's gather of x through perm waits before it
    plan, _ = launch_plan(small, {"early": False}, act_order=False, chain=early, cap=HOPPER)
    assert (small_m_spec(plan, m=1, bps=16, cap=HOPPER, **KIND).pdl, plan["chain"]) == (False, True)
    gathered = small_m_spec(small | early, m=1, bps=16, cap=HOPPER, **(KIND | {"has_perm": True}))
    assert (gathered.pdl, gathered.chain, gathered.has_perm) == (True, False, True)
    # not outside the chain (a config's "chain": False), nor on a 3-CTA cluster (no chain), nor before sm_90
    plan, _ = launch_plan(small, {"chain": False, "early": True}, act_order=False, chain=early, cap=HOPPER)
    assert not small_m_spec(plan, m=1, bps=16, cap=HOPPER, **KIND).pdl
    plan, _ = launch_plan(small | {"split_k": 3}, {}, act_order=False, chain=early, cap=HOPPER)
    assert not small_m_spec(plan, m=1, bps=16, cap=HOPPER, **KIND).pdl
    assert not small_m_spec(small | early, m=1, bps=16, cap=AMPERE, **KIND).pdl
    ring = small_m_spec(small | early | {"cpa": 0, "tma": 3}, m=1, bps=16, cap=HOPPER, **KIND)
    assert (ring.pdl, ring.chain, ring.tma) == (False, True, 3)  # the bulk-copy ring waits first
    # the mid-M kernel where a thread may hold more than 128 registers or its words go through the ring (at 128,
    # 4-bit gate_up spilled with the first block held across the wait); "early" 2 in any plan; not with the gather
    # ahead (it reads x first)
    mid_plan = {"split_k": 4, "warps": 4, "cluster": True, "mid": True, "min_blocks": 4}
    mid = mid_m_spec(mid_plan | early, m=1, cap=HOPPER, **KIND)
    assert (mid.pdl, mid.chain, mid.chain_l2) == (False, True, 1)
    for fits in ({"min_blocks": 2}, {"cpa": 2}, {"early": 2}):
        mid = mid_m_spec(mid_plan | early | fits, m=1, cap=HOPPER, **KIND)
        assert (mid.pdl, mid.chain, mid.chain_l2) == (True, False, 0), fits
    mid_gather = mid_m_spec(
        mid_plan | early | {"min_blocks": 2}, m=4, cap=HOPPER, **(KIND | {"has_perm": True})
    )
    assert (mid_gather.pdl, mid_gather.has_perm) == (True, True)
    ahead = mid_m_spec(mid_plan | early | {"early": 2, "perm_ahead": True}, m=4, cap=HOPPER,
                       **(KIND | {"has_perm": True}))  # fmt: skip
    assert (ahead.pdl, ahead.chain, ahead.perm_ahead) == (False, True, True)
    with pytest.raises(ValueError, match=r"config key 'early' must be 0, 1 or 2 \(or a bool\), got 'yes'"):
        mid_m_spec(mid_plan | early | {"early": "yes"}, m=1, cap=HOPPER, **KIND)


def test_mid_m_spec__n_tiles_and_the_ring_gives_way_to_the_gather_ahead() -> None:
    plan = {"split_k": 2, "warps": 2, "cluster": True, "min_blocks": 2, "cpa": 3, "sfold": True}
    spec = mid_m_spec(plan, m=16, cap=HOPPER, **KIND)
    assert (spec.mt, spec.cpa, spec.sfold, spec.min_blocks, spec.cluster) == (2, 3, True, 2, True)
    wide = plan | {"sfold": False}  # (sfold: two n-tiles at most)
    assert [mid_m_spec(wide, m=m, cap=HOPPER, **KIND).mt for m in (1, 8, 9, 33, 64)] == [1, 1, 2, 5, 8]
    ahead = mid_m_spec(plan | {"perm_ahead": True}, m=16, cap=HOPPER, **(KIND | {"has_perm": True}))
    assert ahead.perm_ahead and ahead.cpa == 0
    assert not mid_m_spec(plan | {"perm_ahead": True}, m=16, cap=HOPPER, **KIND).perm_ahead  # no perm
    assert not mid_m_spec(plan, m=16, cap=AMPERE, **KIND).cluster


SHAPES = {"qkv": (6144, 4096), "o_proj": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_default_plan_of_the_small_and_mid_kernels_builds_a_valid_spec_and_text(shape: str) -> None:
    """Every M to 64, 4 and 8 bits, fp16 and bf16, plain and act-order, chained or not, on an H200's 132 SMs: the
    plan the dispatch would launch builds its spec (whose checks raise on a bad field), its kernel text, and a
    shared-memory size within the 227 KB a CTA may have."""
    n, k = SHAPES[shape]
    built = 0
    plain_kinds = [(4, False, False), (8, False, False), (4, False, True)]
    for chain, kinds in ((CHAIN, plain_kinds), (CHAIN | {"early": True}, plain_kinds),
                         ({}, [(4, True, False), (4, False, True)])):  # fmt: skip
        for m, kind, spec in default_specs(n, k, range(1, 65), kinds, sms=132, cap=HOPPER, chain=chain):
            if isinstance(spec, RswgSpec):
                continue
            assert (k // 128) % spec.split == 0, (m, kind, spec)
            bps = k // 128 // spec.split
            if isinstance(spec, MidSpec):
                smem, text = mid_smem_bytes(spec, m, bps), mid_kernel_source(spec)
            else:
                smem, text = smem_bytes(spec, m, bps), kernel_source(spec)
            assert smem <= 227 * 1024 and "%(" not in text, (m, kind, spec)
            odd_cluster = spec.cluster and spec.split & (spec.split - 1)  # 3, 5, 6 or 7 CTAs: no chain
            assert spec.chain == (bool(chain) and not spec.pdl and not odd_cluster), (m, kind, spec)
            if (
                chain
            ):  # in the chain only "early" loads before the wait: the small-M kernel, the mid-M where it fits
                regs = 65536 // (spec.min_blocks * spec.warps * 32)
                fits = isinstance(spec, KernelSpec) or regs > 128 or spec.cpa > 0
                plan_early = (cuda_plan(m, n, k, kind[0], 132, act_order=kind[2], bf16=kind[1]) or {}).get(
                    "early", 1
                )
                early = bool(chain.get("early")) and bool(plan_early) and fits and not odd_cluster
                assert spec.pdl == early, (m, kind, spec)
            built += 1
    assert built >= 64  # each shape runs these kernels over much of M ≤ 64


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_default_wgmma_plan_builds_a_valid_spec_and_text(shape: str) -> None:
    """Where the default dispatch takes the Hopper wgmma kernel (4 and 8 bits, fp16 and bf16, plain and act-order,
    M to 1024), its plan merged as `maybe_wgmma` merges it builds a spec (a missing plan raises), a text and a CTA's
    shared memory within the GPU's opt-in limit; in the chain the plain kernels prefetch ahead of their wait."""
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_plan import SMEM_MAX
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import rswg_kernel_source, rswg_smem_bytes

    n, k = SHAPES[shape]
    kinds = [(4, False, False), (4, True, False), (8, False, False), (4, False, True)]
    built = 0
    for m, (_, _, act_order), spec in default_specs(n, k, (*range(16, 65, 4), 96, 128, 200, 256, 512, 1024), kinds,
                                                    sms=132, cap=HOPPER, chain=CHAIN):  # fmt: skip
        if not isinstance(spec, RswgSpec):
            continue
        assert rswg_smem_bytes(spec) <= SMEM_MAX and "%(" not in rswg_kernel_source(spec), (m, spec)
        assert act_order or spec.pdl >= 1, (
            m,
            spec,
        )  # the chain's L2 prefetch (act-order: after the permutation)
        built += 1
    assert built >= 40  # the wgmma kernel runs much of M ≥ 32 on each shape
