"""The small- and mid-M CUDA GPTQ plans against their neighbours, as the runtime launches them (in the PDL chain).

For each case "shape:M:bits" of `CASES` (default: the issue's cells where a target is short; bits "4a": 4 bits
act-order, the weight rows sorted and x permuted first; "4b": x in bf16, cuBLAS still fp16), the default dispatch is
timed first and last (the spread of the run), then the plan `gptq_plan.cuda_plan` gives and each neighbour: the mid-M
kernel's CTAs of 8, 4 or 2 strips at every split-K ≤ 8 whose CTAs fit one to four an SM, with and without the scale
folded out of the loop ("sfold"; at M 9..16 also with a 3-stage cp.async ring), and to M = 16 the small-M kernel's
grids with 2 or 3 register buffers or a 2-stage cp.async ring. Each neighbour names every option the plans set: a
config's keys override the plan's and the rest stay. `X_<shape>_<M>_<bits>='[{config}, ...]'` replaces a case's
neighbours by those configs ("kernel": "cuda" is added; they inherit the plan's other keys). `SWEEP_PEERS=1` adds
the wgmma kernel (`{"wgmma": True, "pdl": 1}`, its chained launch) and the Triton kernels (`{"cuda": False}`). Every variant is checked
against x @ W first, then timed as CUDA-graph replays with L2 cold (`gpu.graph_us`). The kernels are compiled first on
14 threads (NVRTC runs without the GIL). An act-order case's neighbours are its plan launched in the chain and with
"xperm_pdl" outside it (`ACT_LAUNCHES`), and each plain neighbour on x permuted first, launched both ways.

    CASES=down:16:4,down:1:8 python benchmarks/gptq_plan_sweep.py

Prints each case's six fastest (by their best of `SWEEP_ROUNDS` rounds, default 1, each variant timed in turn each
round) with their ratio to cuBLAS fp16; with OUT set, all of them to $OUT/plan_sweep.txt.
(The fifteenth session's sweeps, docs/benchmarks.md, and the A/B runs of explicit configs that followed them changed
the plans of qkv M 1..4, down M 5..16 at 4 and 8 bits, 8-bit down M=1 and 8-bit o_proj M 9..16.)
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import gptq_sweep_kit as kit
import torch
from gptq_sweep_kit import GB, K, log, timed

from fusegraph.runtime.kernels.gptq_plan import cuda_plan

SMS = 132
Config = dict[str, Any]
# A config's keys override the plan's and the rest stay (`gptq_cuda_specs.launch_plan`), so each neighbour names every
# option the plans set: without these, a neighbour of a plan with a ring or folded scales would have them too.
MID_BASE: dict[str, Any] = {"mid": True, "sfold": False, "cpa": 0, "bufs": 1}
SMALL_BASE: dict[str, Any] = {"mid": False, "cpa": 0, "bufs": 2, "fold": False}
# Act-order's two launches after the permutation of x: in the runtime's chain (L2 prefetches before the wait), or
# with PDL outside it (the first blocks' words in registers before the wait; `launch_plan` drops "xperm_pdl" in the chain)
ACT_LAUNCHES: tuple[Config, ...] = ({"xperm_pdl": False}, {"xperm_pdl": True, "chain": False})
SHAPES = {label: (k_in, n_out) for label, k_in, n_out in GB.SHAPES}
DEFAULT_CASES = "qkv:1:8,o_proj:1:8,gate_up:1:8,down:1:8,qkv:16:4,o_proj:16:4,gate_up:16:4,down:16:4"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def mid_neighbours(m: int, k: int, n: int, bits: int) -> list[Config]:
    """The mid-M kernel's grids: 8, 4 or 2 strips a CTA, split ≤ 8 (a cluster), 0.7-4 CTAs an SM, the CTAs an SM
    needed to hold them all (and 8 warps an SM if more), each with and without sfold to M = 16 (past 8, with a ring
    too), and M 17..32 with and without the ring."""
    out: list[Config] = []
    for warps in (w for w in (8, 4, 2) if (n // 64) % w == 0):
        for split in (d for d in _divisors(k // 128) if d <= 8):
            ctas = n // 64 // warps * split
            if not 0.7 * SMS <= ctas <= 4 * SMS:
                continue
            resident = math.ceil(ctas / SMS)
            for min_blocks in (b for b in sorted({resident, max(resident, 8 // warps)}) if b * warps <= 16):
                grid = {"split_k": split, "warps": warps, "cluster": split > 1, "min_blocks": min_blocks}
                out.append(MID_BASE | grid)
                if m <= 16 and (
                    bits == 4 or min_blocks * warps <= 8
                ):  # 8-bit fold sums spill at 128 registers
                    out.append(MID_BASE | grid | {"sfold": True})
                    if m > 8:
                        out.append(MID_BASE | grid | {"sfold": True, "cpa": 3})
                elif 16 < m <= 32:  # three or four n-tiles: the ring without sfold's partial sums
                    out.append(MID_BASE | grid | {"cpa": 3})
    return out


def small_neighbours(m: int, k: int, n: int) -> list[Config]:
    """The small-M kernel's grids: 8 or 4 warps, split ≤ 8 (a cluster), 0.7-4 CTAs an SM, ≤ 64 KB of x a CTA, with
    2 or 3 register buffers, or (M ≤ 8) a 2-stage cp.async ring."""
    out: list[Config] = []
    blocks = k // 128
    for warps in (8, 4):
        for split in (d for d in _divisors(blocks) if d <= 8 and blocks // d >= warps // 2):
            ctas = n // 64 * split
            resident = math.ceil(ctas / SMS)
            if not 0.7 * SMS <= ctas <= 4 * SMS or m * blocks // split * 256 > 65536 or resident * warps > 16:
                continue
            base = SMALL_BASE | {
                "split_k": split,
                "warps": warps,
                "cluster": split > 1,
                "min_blocks": resident,
            }
            out += [base, base | {"bufs": 3}] + ([base | {"cpa": 2}] if m <= 8 else [])
    return out


def parse_bits(token: str) -> tuple[int, bool, bool]:
    """A case's (bits, act-order, bf16) from "4" or "8", with "a" for act-order (4 bits) or "b" for bf16 x."""
    return int(token.rstrip("ab")), "a" in token, "b" in token


def variants(label: str, m: int, bits_token: str) -> list[Config]:
    """The case's plan (as a config), then its neighbours or the configs of `X_<label>_<m>_<bits>`, each once."""
    k, n = SHAPES[label]
    bits, act, bf16 = parse_bits(bits_token)
    plan = cuda_plan(m, n, k, bits, SMS, cap=(9, 0), act_order=act, bf16=bf16)
    found: list[Config] = []
    if plan is not None and plan["kernel"] != "wgmma":
        found.append({key: value for key, value in plan.items() if key != "kernel"})
    if act:  # the plan launched both ways after the permutation of x
        found += [cfg | launch for cfg in found if cfg.get("xperm") for launch in ACT_LAUNCHES]
    if extra := os.environ.get(f"X_{label}_{m}_{bits_token}"):
        found += json.loads(extra)
    else:
        plain = mid_neighbours(m, k, n, bits) + (small_neighbours(m, k, n) if m <= 16 else [])
        found += (
            [cfg | {"xperm": True} | launch for cfg in plain for launch in ACT_LAUNCHES] if act else plain
        )
    if os.environ.get(
        "SWEEP_PEERS"
    ):  # the other kernels: wgmma (chained as the runtime launches it) and Triton
        found += [{"wgmma": True, "pdl": 1}, {"cuda": False}]
    unique = {tuple(sorted(cfg.items())): cfg if "cuda" in cfg else {"kernel": "cuda"} | cfg for cfg in found}
    return list(unique.values())


def main() -> None:
    kit.BUDGET_S = float(os.environ.get("SWEEP_BUDGET_S", "400"))
    rounds = int(os.environ.get("SWEEP_ROUNDS", "1"))
    cases = [(label, int(m), bits) for label, m, bits in
             (c.split(":") for c in os.environ.get("CASES", DEFAULT_CASES).split(",") if c)]  # fmt: skip
    layers: dict[tuple[str, str], list[Any]] = {}
    for label, _, bits in cases:
        if (label, bits) not in layers:
            kind = "int8" if parse_bits(bits)[0] == 8 else "act" if parse_bits(bits)[1] else "plain"
            made = GB.Bench(*SHAPES[label], (kind,)).layers[kind]
            if parse_bits(bits)[
                2
            ]:  # bf16 x takes bf16 scales (the dense reference keeps the fp16 ones: within tol)
                made = [SimpleNamespace(**(vars(lay) | {"t": lay.t | {"scales": lay.t["scales"].bfloat16()}}))
                        for lay in made]  # fmt: skip
            layers[(label, bits)] = made
    runs = [(label, m, bits, variants(label, m, bits)) for label, m, bits in cases]
    started = time.time()

    def x_dtype(token: str) -> torch.dtype:
        return torch.bfloat16 if parse_bits(token)[2] else torch.float16

    jobs = [(layers[(label, bits)][0], torch.randn(m, SHAPES[label][0], device="cuda", dtype=x_dtype(bits)), cfg)
            for label, m, bits, cfgs in runs for cfg in cfgs]  # fmt: skip

    def compile_one(job: tuple[Any, torch.Tensor, Config]) -> str | None:
        try:
            GB.ours(K, *job)
        except Exception as err:  # noqa: BLE001 - reported, and timed (and reported) again below
            return f"{job[2]}: {type(err).__name__}: {str(err)[:200]}"
        return None

    with ThreadPoolExecutor(14) as pool:
        failed = [why for why in pool.map(compile_one, jobs) if why]
    torch.cuda.synchronize()
    log(f"compiled {len(jobs)} variants in {time.time() - started:.1f} s ({len(failed)} refused)")
    kit.T0 = time.time()
    for label, m, bits, cfgs in runs:
        lays = layers[(label, bits)]
        xs16 = [torch.randn(m, SHAPES[label][0], device="cuda", dtype=torch.float16) for _ in lays]
        xs = [x.to(x_dtype(bits)) for x in xs16]
        tol = 2e-2 if parse_bits(bits)[2] else 5e-3
        nbits, act, bf16 = parse_bits(bits)
        row = f"{label} M={m} {nbits}-bit{' act-order' if act else ''}{' bf16' if bf16 else ''}"
        cublas = timed(
            row, "cuBLAS", lambda lay, x: torch.matmul(x, lay.w), lays, xs16
        )  # fp16 (as the table)
        first = timed(row, "default", lambda lay, x: GB.ours(K, lay, x), lays, xs, tol)
        times: dict[int, list[float]] = {}
        for _ in range(rounds):  # each variant in turn, `rounds` times: the spread of the run shows
            for i, cfg in enumerate(cfgs):
                if t := timed(row, str(cfg), lambda lay, x, c=cfg: GB.ours(K, lay, x, c), lays, xs, tol):
                    times.setdefault(i, []).append(t[0])
        last = timed(row, "default", lambda lay, x: GB.ours(K, lay, x), lays, xs, tol)
        if not (cublas and first and last and times):
            log(f"== {row}: not timed (see above)")
            continue
        got = sorted((min(us), i) for i, us in times.items())
        lines = [
            f"== {row}: cuBLAS {cublas[0]:.2f} µs, default {first[0]:.2f} / {last[0]:.2f} (first / last)"
        ]
        lines += [f"   {us:7.2f}  {cublas[0] / us:4.2f}x  {cfgs[i]}  ({', '.join(f'{t:.2f}' for t in times[i])})"
                  for us, i in got]  # fmt: skip
        for line in lines[:7]:
            log(line)
        if out := os.environ.get("OUT"):
            with open(os.path.join(out, "plan_sweep.txt"), "a") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
