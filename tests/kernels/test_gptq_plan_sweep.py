"""`benchmarks/gptq_plan_sweep.py`'s neighbours, on the CPU: each launches what it names. A forced config's keys override
the plan's and the rest stay (`launch_plan`), so a neighbour that left out "cpa" or "sfold" ran with the plan's ring or
fold: the fifteenth session's first sweep of down M=16 timed every neighbour with its plan's ring that way."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.mark.parametrize(
    ("label", "m", "token"),
    [
        ("down", 16, "4"),
        ("down", 1, "8"),
        ("qkv", 1, "4"),
        ("o_proj", 4, "4"),
        ("down", 16, "4a"),
        ("o_proj", 8, "4a"),
        ("o_proj", 24, "4"),
        ("qkv", 4, "4b"),
    ],
)
def test_plan_sweep__each_neighbour_launches_the_options_it_names(label: str, m: int, token: str) -> None:
    import gptq_plan_sweep as sweep

    from fusegraph.runtime.kernels.gptq_cuda_specs import launch_plan, mid_m_spec, small_m_spec, takes_mid
    from fusegraph.runtime.kernels.gptq_plan import cuda_plan

    k, n = sweep.SHAPES[label]
    bits, act, bf16 = sweep.parse_bits(token)
    cfgs = sweep.variants(label, m, token)
    assert len(cfgs) > 4 and all(cfg["kernel"] == "cuda" for cfg in cfgs)
    for cfg in cfgs[1:]:  # the first is the plan itself
        # as `maybe_gptq_cuda` plans a forced config, then merges it
        forced = cuda_plan(
            m, n, k, bits, 132, forced=True, mid=cfg.get("mid"), cap=(9, 0), configured=True, bf16=bf16
        )
        assert forced is not None, cfg
        chain = {"chain": True, "chain_l2": 1}  # the runtime's
        plan, permuted = launch_plan({key: v for key, v in forced.items() if key != "kernel"}, cfg, act_order=act,
                                     chain=chain, cap=(9, 0))  # fmt: skip
        # act-order: x permuted first, then the kernel launched in the chain, or with PDL where the config leaves it
        assert permuted == act, cfg
        assert bool(plan.get("xperm_pdl")) == (act and cfg.get("chain") is False), cfg
        split = int(plan["split_k"])  # no chain on clusters of 3, 5, 6 or 7 CTAs
        in_chain = cfg.get("chain") is not False and not (plan.get("cluster") and split & (split - 1))
        assert bool(plan.get("chain")) == in_chain, cfg
        kind: dict[str, Any] = {
            "bits": bits,
            "bf16": bf16,
            "has_perm": False,
            "zero_v1": True,
            "cap": (9, 0),
        }
        if takes_mid(plan, m):
            mid = mid_m_spec(plan, m=m, **kind)
            # unnamed options as a reader takes them: no ring, no fold, one register buffer
            assert (mid.cpa, mid.sfold, mid.bufs) == (
                cfg.get("cpa", 0),
                cfg.get("sfold", False),
                cfg.get("bufs", 1),
            ), cfg
            assert (mid.split, mid.warps, mid.min_blocks) == (
                cfg["split_k"],
                cfg["warps"],
                cfg["min_blocks"],
            ), cfg
        else:
            small = small_m_spec(plan, m=m, bps=k // 128 // cfg["split_k"], **kind)
            assert (small.cpa, small.bufs, small.fold) == (
                cfg.get("cpa", 0),
                cfg.get("bufs", 2),
                cfg.get("fold", False),
            ), cfg
            assert (small.split, small.warps, small.min_blocks) == (
                cfg["split_k"],
                cfg["warps"],
                cfg["min_blocks"],
            )


def test_plan_sweep__peers_are_the_wgmma_kernel_chained_and_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    import gptq_plan_sweep as sweep

    monkeypatch.setenv("SWEEP_PEERS", "1")
    cfgs = sweep.variants("o_proj", 24, "4")
    # Triton keeps no "kernel" key (a forced "cuda" kernel would override "cuda": False)
    assert cfgs[-2:] == [{"kernel": "cuda", "wgmma": True, "pdl": 1}, {"cuda": False}]
    monkeypatch.delenv("SWEEP_PEERS")
    assert {"cuda": False} not in sweep.variants("o_proj", 24, "4")
