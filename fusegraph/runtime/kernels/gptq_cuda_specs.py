"""From a plan to the compiled kernel's spec, for the small-M and mid-M CUDA GPTQ kernels (`gptq_cuda.py` launches
them). Pure functions of the plan, the call's shape and the device's compute capability, no tensors, so that the
dispatch can be checked and its kernels listed without a GPU (`scripts/gptq_cubins.py`):

- `launch_plan`: the plan `gptq_plan.cuda_plan` made, with a caller's config keys, the runtime's PDL chain and
  act-order's choice between x permuted once and the kernel's own gather;
- `takes_mid`, `small_m_spec` / `mid_m_spec`: which kernel, and the `KernelSpec` / `MidSpec` that plan compiles to;
- `wgmma_config`: the config a default wgmma plan hands `gptq_cuda_wgmma.maybe_wgmma`;
- `default_specs`: the spec each config-less call of a shape runs, all three kernels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fusegraph.runtime.kernels.gptq_cuda_mid_spec import MidSpec
from fusegraph.runtime.kernels.gptq_cuda_small_spec import KernelSpec
from fusegraph.runtime.kernels.gptq_cuda_wgmma import with_config
from fusegraph.runtime.kernels.gptq_cuda_wgmma_plan import rswg_plan, rswg_spec
from fusegraph.runtime.kernels.gptq_cuda_wgmma_spec import RswgSpec
from fusegraph.runtime.kernels.gptq_plan import cuda_plan

__all__ = [
    "PLAN_KEYS",
    "default_specs",
    "launch_plan",
    "mid_early_fits",
    "mid_m_spec",
    "small_m_spec",
    "takes_mid",
    "wgmma_config",
]

PLAN_KEYS = ("split_k", "warps", "cluster", "min_blocks", "l2pf", "tma", "mid", "xperm", "perm_ahead",
             "bufs", "xperm_pdl", "xfull", "fold", "sfold", "chain", "chain_l2", "cpa", "early")  # fmt: skip


def launch_plan(
    plan: dict[str, Any], cfg: dict[str, Any], *, act_order: bool, chain: dict[str, Any], cap: tuple[int, int]
) -> tuple[dict[str, Any], bool]:
    """(the plan to launch, whether x is permuted first) from `cuda_plan`'s `plan` (a copy is changed), a caller's
    `cfg` (its `PLAN_KEYS` override the plan's), act-order, the runtime's chain keys (`pdl.gemm_chain`: {} off, or
    {"chain": True, "chain_l2": n}; not where `cfg` has its own "chain") and the compute capability.

    A ring asked for drops the plan's register buffers; options the plan's cp.async ring excludes, asked for, drop
    the ring. No chain on clusters of 3, 5, 6 or 7 CTAs (measured slower: H200 down M=16, split 7, 23.7 µs chained
    against 20.6). Act-order with "xperm": x is permuted first, and "xperm_pdl" (the kernel launched with PDL after
    the permutation) holds only outside the chain, whose kernels may start before the one ahead of the permutation
    ends; without "xperm" no "xperm_pdl".

    Example:
        >>> launch_plan({"split_k": 7, "warps": 4, "cluster": True, "cpa": 2}, {"bufs": 3}, act_order=False,
        ...             chain={"chain": True, "chain_l2": 1}, cap=(9, 0))
        ({'split_k': 7, 'warps': 4, 'cluster': True, 'bufs': 3}, False)
    """
    plan = plan | {key: cfg[key] for key in PLAN_KEYS if key in cfg}
    if (cfg.get("tma") or cfg.get("cpa")) and "bufs" not in cfg:
        plan.pop("bufs", None)
    if "cpa" not in cfg and any(cfg.get(key) for key in ("bufs", "tma", "fold", "xfull", "perm_ahead")):
        plan.pop("cpa", None)
    chain = chain if "chain" not in cfg else {}
    split = int(plan["split_k"])
    if plan.get("cluster") and split & (split - 1):
        chain = {}
    permute_x = act_order and bool(plan.pop("xperm", False))
    if permute_x:
        plan["xperm_pdl"] = bool(plan.get("xperm_pdl")) and cap >= (9, 0) and not chain
    else:  # registers before the wait only right after our own permutation (no earlier writer of the weights)
        plan.pop("xperm_pdl", None)
    return chain | plan, permute_x  # a config's own "early" stands


def mid_early_fits(plan: dict[str, Any]) -> bool:
    """Whether the mid-M kernel takes the chain's "early" 1: where a thread may hold more than 128 registers
    (`__launch_bounds__` of warps·32 threads and min_blocks CTAs an SM), or its words stream through the cp.async
    ring. At 128 (gate_up's plan) it lost on an H200 (M=1 18.8 against 18.4 µs), though with the scales loaded
    after the wait it no longer spills (`gptq_ptxas.py --mid-early`).

    Example:
        >>> mid_early_fits({"warps": 4, "min_blocks": 2}), mid_early_fits({"warps": 4, "min_blocks": 4})
        (True, False)
    """
    regs = 65536 // (int(plan.get("min_blocks", 1)) * int(plan["warps"]) * 32)
    return regs > 128 or bool(plan.get("cpa"))


def _pdl_fields(plan: dict[str, Any], has_perm: bool, cap: tuple[int, int], *, small: bool) -> dict[str, Any]:
    """A spec's PDL fields from the plan (both kernels): "pdl" (the first blocks' words and zeros loaded before the
    wait: right after our own permutation of x, or in the chain with "early": 1 the small-M kernel and the mid-M one
    where `mid_early_fits`, 2 both; not with the bulk-copy ring nor the mid-M kernel's gather ahead), else the
    runtime's chain ("chain", "chain_l2"); neither before sm_90."""
    early_key = plan.get("early") or 0
    if early_key not in (0, 1, 2):  # True is 1
        raise ValueError(f"gptq_cuda: config key 'early' must be 0, 1 or 2 (or a bool), got {early_key!r}")
    takes = early_key == 2 or (early_key == 1 and (small or mid_early_fits(plan)))
    chain_early = takes and bool(plan.get("chain")) and not plan.get("tma")
    early = chain_early or bool(plan.get("xperm_pdl"))
    gather_ahead = has_perm and bool(plan.get("perm_ahead"))  # the mid-M kernel gathers x before any wait
    pdl = early and (small or not gather_ahead) and cap >= (9, 0)
    chain = bool(plan.get("chain")) and not pdl and cap >= (9, 0)
    return {"pdl": pdl, "chain": chain, "chain_l2": int(plan.get("chain_l2", 0)) if chain else 0}


def small_m_spec(plan: dict[str, Any], *, m: int, bits: int, bf16: bool, has_perm: bool, zero_v1: bool,
                 cap: tuple[int, int], bps: int) -> KernelSpec:  # fmt: skip
    """The small-M kernel's spec for `plan` at M = `m` (≤ 16) with `bps` 128-row blocks a K slice: clusters, the L2
    prefetch and the bulk-copy ring only on sm_90; the gather options only with a perm; "fold" only in fp16, without
    the bulk-copy ring, and where each warp's blocks fit its fold sums (bps ≤ 32·warps).

    Example:
        >>> small_m_spec({"split_k": 2, "warps": 8, "cluster": True, "fold": True}, m=1, bits=4, bf16=False,
        ...              has_perm=False, zero_v1=True, cap=(8, 0), bps=16).cluster
        False
    """
    split, warps = int(plan["split_k"]), int(plan["warps"])
    return KernelSpec(bits=8 if bits == 8 else 4, bf16=bf16, mt=1 if m <= 8 else 2, warps=warps, split=split,
                      cluster=bool(plan["cluster"]) and split > 1 and cap >= (9, 0), has_perm=has_perm,
                      zero_v1=zero_v1, min_blocks=int(plan.get("min_blocks", 2)),
                      l2pf=int(plan.get("l2pf", 0)) if cap >= (9, 0) else 0,
                      tma=int(plan.get("tma", 0)) if cap >= (9, 0) else 0,
                      perm_ahead=bool(plan.get("perm_ahead")) and has_perm,
                      bufs=int(plan.get("bufs", 2)), cpa=int(plan.get("cpa", 0)),
                      **_pdl_fields(plan, has_perm, cap, small=True),
                      xfull=bool(plan.get("xfull")) and has_perm and not plan.get("perm_ahead"),
                      fold=bool(plan.get("fold")) and not bf16 and not plan.get("tma") and bps <= 32 * warps)  # fmt: skip


def mid_m_spec(plan: dict[str, Any], *, m: int, bits: int, bf16: bool, has_perm: bool, zero_v1: bool,
               cap: tuple[int, int]) -> MidSpec:  # fmt: skip
    """The mid-M kernel's spec for `plan` at M = `m` (≤ 64): ⌈M/8⌉ n-tiles; clusters and the L2 prefetch only on
    sm_90; the gather ahead only with a perm, and then no cp.async ring.

    Example:
        >>> mid_m_spec({"split_k": 2, "warps": 2, "cluster": True, "cpa": 3, "min_blocks": 2}, m=16, bits=4,
        ...            bf16=False, has_perm=False, zero_v1=True, cap=(9, 0)).cpa
        3
    """
    split = int(plan["split_k"])
    return MidSpec(bits=8 if bits == 8 else 4, bf16=bf16, mt=(m + 7) // 8, warps=int(plan["warps"]), split=split,
                   cluster=bool(plan["cluster"]) and split > 1 and cap >= (9, 0), has_perm=has_perm,
                   zero_v1=zero_v1, min_blocks=int(plan.get("min_blocks", 1)),
                   perm_ahead=bool(plan.get("perm_ahead")) and has_perm,
                   bufs=int(plan.get("bufs", 1)), l2pf=int(plan.get("l2pf", 0)) if cap >= (9, 0) else 0,
                   sfold=bool(plan.get("sfold")), cpa=0 if plan.get("perm_ahead") else int(plan.get("cpa", 0)),
                   **_pdl_fields(plan, has_perm, cap, small=False))  # fmt: skip


def takes_mid(plan: dict[str, Any], m: int) -> bool:
    """Whether `plan` runs the mid-M kernel (M > 16, or its "mid" key), else the small-M one."""
    return m > 16 or bool(plan.get("mid"))


def wgmma_config(plan: dict[str, Any], *, chained: bool) -> dict[str, Any]:
    """The default wgmma plan as `maybe_wgmma`'s config: in the PDL chain ("pdl", default 1) the kernel's L2 prefetch
    before its wait. Not after act-order's own permutation of x (the plan's "pdl" then stands as it is).

    Example:
        >>> wgmma_config({"kernel": "wgmma", "wgmma": True}, chained=True)["pdl"]
        1
    """
    return plan | {"pdl": plan.get("pdl", 1)} if chained else plan


def default_specs(n: int, k: int, ms: Sequence[int], kinds: Sequence[tuple[int, bool, bool]], *, sms: int,
                  cap: tuple[int, int], chain: dict[str, Any]
                  ) -> Iterator[tuple[int, tuple[int, bool, bool], KernelSpec | MidSpec | RswgSpec]]:  # fmt: skip
    """(m, (bits, bf16, act_order), spec) for each config-less call of x `[m, k]` · W `[k, n]` that a CUDA kernel
    takes on a GPU of `sms` SMs and capability `cap` with the runtime's `chain` (`pdl.gemm_chain`), as
    `gptq_cuda.maybe_gptq_cuda` would launch it: a `KernelSpec`, `MidSpec` or `RswgSpec` (zeros stored as z − 1).

    Example:
        >>> [type(s).__name__ for _, _, s in default_specs(4096, 4096, (1, 64), [(4, False, False)], sms=132,
        ...                                                cap=(9, 0), chain={})]
        ['KernelSpec', 'RswgSpec']
    """
    for m in ms:
        for bits, bf16, act_order in kinds:
            plan = cuda_plan(m, n, k, bits, sms, act_order=act_order, bf16=bf16, cap=cap)
            if plan is None:
                continue
            spec: KernelSpec | MidSpec | RswgSpec
            if plan["kernel"] == "wgmma":  # act-order: x permuted first, the plain kernel
                wplan = rswg_plan(m, n, k, sms, bits)
                if wplan is None:  # as maybe_wgmma refuses it
                    raise ValueError(f"default_specs: the wgmma kernel has no plan for M={m} N={n} K={k}")
                config = wgmma_config(plan, chained=bool(chain) and not act_order)
                spec = rswg_spec(with_config(wplan, config), bf16=bf16, zero_v1=True, bits=bits)
            else:
                plan, permuted = launch_plan(plan, {}, act_order=act_order, chain=chain, cap=cap)
                kind: dict[str, Any] = {
                    "bits": bits,
                    "bf16": bf16,
                    "has_perm": act_order and not permuted,
                    "zero_v1": True,
                }
                if takes_mid(plan, m):
                    spec = mid_m_spec(plan, m=m, cap=cap, **kind)
                else:
                    spec = small_m_spec(plan, m=m, bps=k // 128 // int(plan["split_k"]), cap=cap, **kind)
            yield m, (bits, bf16, act_order), spec
