"""The small-M GPTQ plans re-measured in the PDL chain (issue #11): one GPU call.

`python benchmarks/gptq_chain_sweep.py [--ms 1,4,16] [--kinds plain,act,int8] [--ms8 1] [--shapes qkv,...] [--cpa]
[--nowait]`: for each Llama-3-8B shape, M and kind (4-bit plain, act-order, 8-bit at the M of --ms8), the default
dispatch, the same without the chain ("nochain") or without the kernels' words before their wait ("noearly"; "early2":
the mid-M kernel's too where its registers are capped at 128), with deeper register buffers, L2 prefetches ahead or
the scale out of the mid-M loop ("bufs3", "l2pf1", "sfold"), and forced plans of the small-M and mid-M CUDA kernels
around it (warps, split-K, cluster or ticket, register caps); for act-order, the plain default plan and the three
fastest plain plans with x permuted first and with the kernel's own gather through perm.
The default is timed again last ("default again": the spread of a cell). As in `gpu.py`, 24 calls of one variant
are captured back to back in a CUDA graph with the operands rotated past L2, so chained calls overlap as in a decode
step. Every variant is checked against `x.float() @ W` first. The plans were last swept without the chain (fourth
session); a kernel that keeps one CTA an SM leaves no room for the next kernel's CTAs to start early.

`--cpa`: the plain and 8-bit cells take `cpa_candidates` instead (the cp.async rings of both kernels).
SWEEP_EXTRA ("name:{json config};...") adds variants to every cell; SWEEP_ONLY (a regex) keeps the default, "default
again" and the variants whose names match it.

`--nowait` (a diagnostic, never a result): the small- and mid-M kernels are compiled without their
`griddepcontrol.wait`, so each chained call overlaps the one before as if nothing depended on it: the time the chain's
dependency costs. Sound only because the benchmark's x is an input that no kernel writes; a ticket's shared workspace
(split-K without a cluster) may race, so read only cluster cells (the thirtieth session: qkv M=1 6.70-6.79 µs with the
wait, 5.40-5.57 without; gate_up M=1 18.39-18.52 against 15.63-15.91).

All the variants' kernels are compiled first by NVRTC in parallel threads (`gptq_cuda_probe_kit.compile_all`).
Every line goes to stdout and $OUT/gptq_chain_sweep.txt.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gptq_cuda_probe_kit import compile_all  # noqa: E402
from gptq_sweep_kit import BUDGET_S, LINES, T0, K, log, timed  # noqa: E402
from gpu import copy_bandwidth, run_sections  # noqa: E402

from fusegraph.runtime.kernels import gptq_cuda as C  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_mid import MID_KERNEL_NAME, MidSpec, mid_kernel_source  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_src import KERNEL_NAME, kernel_source  # noqa: E402
from fusegraph.runtime.kernels.gptq_plan import cuda_plan  # noqa: E402

SMS = 132
ABLATIONS = (
    "plain plan/xperm",
    "plain plan/gather",
    "nochain",
    "noearly",
    "early2",
    "bufs2",
    "bufs3",
    "nosfold",
    "bufs4",
    "l2pf1",
    "l2pf2",
    "sfold",
    "xperm",
    "gather",
)  # always logged


def _arg(name: str, default: str) -> list[str]:
    return (sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default).split(",")


def candidates(m: int, n: int, k: int) -> list[tuple[str, dict[str, Any] | None]]:
    """The default, its chain ablations, and forced small-M / mid-M plans of one plain cell."""
    out: list[tuple[str, dict[str, Any] | None]] = [("default", None), ("nochain", {"chain": False})]
    # "noearly": the chain's L2 prefetches only (the small-M kernel's words after its wait)
    out += [
        ("noearly", {"early": 0}),
        ("early2", {"early": 2}),
        ("bufs2", {"bufs": 2}),
        ("bufs3", {"bufs": 3}),
        ("bufs4", {"bufs": 4}),
        ("l2pf1", {"l2pf": 1}),
        ("l2pf2", {"l2pf": 2}),
    ]
    if m > 8:  # the mid-M kernel's scale out of the loop at two n-tiles (on by default to M = 8)
        out += [("sfold", {"sfold": True}), ("nosfold", {"sfold": False})]
    blocks, strips = k // 128, n // 64
    for d in (d for d in (1, 2, 4, 7, 8, 14, 16) if blocks % d == 0 and strips * d <= 6 * SMS):
        cluster = 2 <= d <= 8 and not d & (d - 1)  # the chain is off on clusters of 3, 5, 6 or 7
        kind = "c" if cluster else "t"
        for warps, caps in (
            (8, (1, 2)),
            (4, (2, 4)),
        ):  # small-M: 255 / 128 registers at 8 warps, 255 / 128 at 4
            if strips * d >= SMS // 2 and d * warps <= blocks:
                out += [(f"small w{warps} s{d}{kind} mb{mb}", {"kernel": "cuda", "mid": False, "split_k": d,
                         "warps": warps, "cluster": cluster, "min_blocks": mb, "bufs": 2}) for mb in caps]  # fmt: skip
        for warps, caps in ((1, (8, 12)), (2, (3, 4)), (4, (2, 4))):  # mid-M: 64-column strips a CTA
            if strips % warps == 0 and SMS // 2 <= strips // warps * d <= 8 * SMS:
                out += [(f"mid w{warps} s{d}{kind} mb{mb}", {"kernel": "cuda", "mid": True, "split_k": d,
                         "warps": warps, "cluster": cluster, "min_blocks": mb, "sfold": m <= 16}) for mb in caps]  # fmt: skip
    return out


def cpa_candidates(m: int, n: int, k: int) -> list[tuple[str, dict[str, Any] | None]]:
    """`--cpa`: the default, the default plan with a cp.async ring of S stages ("cpa"), and forced small-M and mid-M
    plans with rings of 2-4 stages (rings holding all of a warp's blocks were slower on every shape at M=1)."""
    out: list[tuple[str, dict[str, Any] | None]] = [("default", None)]
    out += [(f"default cpa{s}", {"cpa": s}) for s in (2, 3, 4, 6)]
    blocks, strips = k // 128, n // 64
    for d in (d for d in (1, 2, 4, 7, 8) if blocks % d == 0):
        cluster = 2 <= d <= 8
        kind = "c" if cluster else "t"
        for warps in (1, 2, 4):  # mid-M: 64-column strips a CTA, one warp a strip, each warp the whole slice
            ctas = strips // warps * d
            if strips % warps or not SMS <= ctas <= 8 * SMS:
                continue
            mb = -(-ctas // SMS)
            for s in (2, 3):
                out.append((f"mid w{warps} s{d}{kind} mb{mb} cpa{s}", {"kernel": "cuda", "mid": True, "split_k": d,
                            "warps": warps, "cluster": cluster, "min_blocks": mb, "sfold": m <= 16, "cpa": s}))  # fmt: skip
        for warps in (4, 8):  # small-M: one strip a CTA, its warps share the slice's blocks
            ctas = strips * d
            if not SMS // 2 <= ctas <= 4 * SMS or d * warps > blocks:
                continue
            mb = max(1, -(-ctas // SMS))
            for s in (2, 3, 4):
                out.append((f"small w{warps} s{d}{kind} mb{mb} cpa{s}", {"kernel": "cuda", "mid": False, "split_k": d,
                            "warps": warps, "cluster": cluster, "min_blocks": mb, "cpa": s}))  # fmt: skip
    return out


def with_extra(variants: list[tuple[str, dict[str, Any] | None]]) -> list[tuple[str, dict[str, Any] | None]]:
    """`variants` with SWEEP_EXTRA's named configs added, then filtered by SWEEP_ONLY (the default always kept)."""
    variants = [*variants, *GB.named_configs(os.environ.get("SWEEP_EXTRA", ""))]
    if only := os.environ.get("SWEEP_ONLY"):
        variants = [(n, c) for n, c in variants if n == "default" or re.search(only, n)]
    return variants


def act_candidates(
    plain: list[tuple[float, str, dict[str, Any] | None]], plain_plan: dict[str, Any] | None
) -> list[tuple[str, dict[str, Any] | None]]:
    """Act-order's default and chain ablations, the plain call's default plan on x permuted first, then the three
    fastest forced plain plans with x permuted first and with the kernel's own gather through perm."""
    out: list[tuple[str, dict[str, Any] | None]] = [("default", None), ("nochain", {"chain": False}),
                                                    ("noearly", {"early": 0}), ("xperm", {"xperm": True}),
                                                    ("gather", {"xperm": False})]  # fmt: skip
    if (
        plain_plan is not None and plain_plan["kernel"] != "wgmma"
    ):  # as the plain call runs it, x permuted first
        forced_plain = plain_plan | {"kernel": "cuda", "mid": plain_plan["kernel"] == "mid"}
        out += [("plain plan/xperm", forced_plain | {"xperm": True}),
                ("plain plan/gather", forced_plain | {"xperm": False, "perm_ahead": False})]  # fmt: skip
    forced = [(name, cfg) for _, name, cfg in sorted(plain, key=lambda r: r[0]) if cfg and "kernel" in cfg]
    for name, cfg in forced[:3]:
        out += [(f"{name}/xperm", cfg | {"xperm": True}), (f"{name}/gather", cfg | {"xperm": False})]
    out += [("bufs2", {"bufs": 2}), ("bufs3", {"bufs": 3})]
    return out


class _Recorded(Exception):  # noqa: N818 - a control-flow signal of the spec collection
    pass


def collect_specs(b: GB.Bench, kind: str, m: int, variants: list[tuple[str, dict[str, Any] | None]]) -> None:
    """Every variant's kernel spec (its launch stopped before it runs), compiled in parallel threads."""
    specs: list[Any] = []

    def record(spec: Any, *_a: Any, **_k: Any) -> None:
        specs.append(spec)
        raise _Recorded

    launch, C._launch = C._launch, record
    lay, x = b.layers[kind][0], b.xs(m, 1)[0]
    try:
        for _, cfg in variants:
            try:
                GB.ours(K, lay, x, cfg)
            except Exception:  # noqa: BLE001, S112 - recorded, or a plan that cannot run (timed later)
                continue
    finally:
        C._launch = launch
    todo = [s for s in dict.fromkeys(specs) if (0, s) not in C._KERNELS]
    t = time.time()
    sources = [(mid_kernel_source(s), MID_KERNEL_NAME) if isinstance(s, MidSpec) else (kernel_source(s), KERNEL_NAME)
               for s in todo]  # fmt: skip
    if "--nowait" in sys.argv:  # the diagnostic bound (module docstring): no kernel waits for the one before
        sources = [(text.replace("pdl_wait();", ""), name) for text, name in sources]
    for spec, kern in zip(todo, compile_all(sources), strict=True):
        C._KERNELS[(0, spec)] = kern
    log(f"  (compiled {len(todo)} kernels in {time.time() - t:.1f} s)")


def cell(b: GB.Bench, label: str, kind: str, m: int, variants: list[tuple[str, dict[str, Any] | None]],
         bw: float) -> list[tuple[float, str, dict[str, Any] | None]]:  # fmt: skip
    """Each variant of one (shape, M, kind) checked and timed; the fastest 8 and the ablations logged."""
    variants = [*variants, ("default again", None)]
    collect_specs(b, kind, m, variants)
    bits = 8 if kind == "int8" else 4
    plan = cuda_plan(m, b.n_out, b.k_in, bits, SMS, act_order=kind == "act", cap=(9, 0))
    log(f"{label} {b.k_in}x{b.n_out} M={m} {kind}: default plan {plan}")
    layers = b.layers[kind]
    xs = b.xs(m, len(layers))
    nbytes = GB.quant_bytes(b.k_in, b.n_out, bits) + m * (b.k_in + b.n_out) * 2
    res: list[tuple[float, str, dict[str, Any] | None]] = []
    for name, cfg in variants:
        got = timed(f"{label} M={m} {kind}", name, lambda lay, x: GB.ours(K, lay, x, cfg), layers, xs)
        if got is not None:
            res.append((got[0], name, cfg))
    default = next((us for us, name, _ in res if name == "default"), float("nan"))
    again = next((us for us, name, _ in res if name == "default again"), float("nan"))
    log(f"  default {default:.2f} us, again {again:.2f} us")
    ranked = sorted(res, key=lambda r: r[0])
    for us, name, _ in ranked[:8] + [r for r in res if r[1] in ABLATIONS]:
        log(f"  {name:<30} {us:7.2f} us ({nbytes / (us * 1e-6) / bw:4.0%} HBM, {default / us:.3f}x default)")
    return res


def sweep(bw: float) -> None:
    ms = [int(v) for v in _arg("--ms", "1,4,16")]
    kinds = _arg("--kinds", "plain,act,int8")
    ms8 = [int(v) for v in _arg("--ms8", "1")]  # 8 bits at these M only
    shapes = [s for s in GB.SHAPES if s[0] in _arg("--shapes", ",".join(GB.SHAPES_LABELS))]
    for label, k_in, n_out in shapes:
        b = GB.Bench(k_in, n_out, tuple(kinds))
        for m in ms:
            pick = cpa_candidates if "--cpa" in sys.argv else candidates
            plain = cell(b, label, "plain", m, with_extra(pick(m, n_out, k_in)), bw)
            if "act" in kinds and time.time() - T0 < BUDGET_S:
                plain_plan = cuda_plan(m, n_out, k_in, 4, SMS, cap=(9, 0))
                cell(b, label, "act", m, with_extra(act_candidates(plain, plain_plan)), bw)
            if "int8" in kinds and m in ms8 and time.time() - T0 < BUDGET_S:
                cell(b, label, "int8", m, with_extra(pick(m, n_out, k_in)), bw)
        del b
        torch.cuda.empty_cache()


def main() -> int:
    log(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__}")
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    return run_sections([("sweep", lambda: sweep(bw))], None, log, LINES, "gptq_chain_sweep.txt")


if __name__ == "__main__":
    raise SystemExit(main())
