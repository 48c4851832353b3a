"""The Hopper wgmma GPTQ kernel (`gptq_cuda_wgmma.py`) against the default dispatch and cuBLAS fp16.

`python benchmarks/gpu_gptq_wgmma.py [--ms 64,256,1024,128,512,32] [--bits 4,8]`: the four Llama-3-8B
shapes (plain g128, fp16 or with --bf16 bf16 x and scales, 4 and/or 8 bits) at each M: cuBLAS fp16 on the dense weight, the default dispatch of
`gptq_tiled_matmul` ("default") and without the wgmma kernel ("prev": {"wgmma": False}), and the
warp-specialized wgmma kernel ("ws", x by the copy engine) at its plan and its neighbours (3 strips a CTA,
"c3", at split 1, 2, 4 where N/64 divides by 3); split-K half and double (2 and 4 where the plan takes stream-K), stream-K, the split-K
sum a float a load ("novred") or by row bands sent by st.async ("sred"), x multicast to 2 column tiles ("mc"), 128 rows a CTA past M = 128 (split 1, 2, 4 and stream-K: the tile counts
at M ≥ 256), two CTAs an SM at 64 rows ("t64m2", split 1 and 2) and at 128 rows of one strip ("t128n1m2"), one strip a
CTA ("n1", split 1 and 2); with WGMMA_PROBES=1 its ablations
("p1".."p6": no dequantization, no x loads, no wgmma, no word loads, no blocks, no blocks and no epilogue; timed unchecked) and x by
cp.async; at split 1 the outputs staged in shared memory ("os"). Device time from CUDA-graph replays with every
operand rotated over enough copies that L2 stays cold (`gpu_gptq.Bench`); each variant is checked
against x @ W first. Writes the lines to $OUT/gptq_wgmma.txt. WGMMA_BUDGET_S (default 60) stops
timing new rows once spent; WGMMA_ONLY (a regex) keeps the plan and the variants whose names match;
WGMMA_EXTRA ("name:{json config};...") adds variants of the plan (4 wgmma steps in flight: 'i4:{"infl":4}').
WGMMA_OLD_PLAN (a .py file holding an earlier `rswg_plan`, e.g. `git show REV:fusegraph/runtime/kernels/
gptq_cuda_wgmma_plan.py > old_plan.py` in the tree) adds that plan as the variant "ws/old", to time a plan change side
by side ('WGMMA_ONLY=old$' keeps just the two). WGMMA_SHAPES ("qkv,o_proj") times only those shapes.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gpu import copy_bandwidth, graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_tiled as T  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_wgmma import with_config  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_wgmma_plan import ring_stages, rswg_plan, rswg_spec, rswg_tok  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import precompile  # noqa: E402

LINES: list[str] = []
T0 = time.time()
BUDGET_S = float(os.environ.get("WGMMA_BUDGET_S", "60"))
PROBES = os.environ.get("WGMMA_PROBES", "0") == "1"  # also time the warp-specialized kernel's ablations
PROBE_MS = {
    int(v) for v in os.environ.get("WGMMA_PROBE_MS", "").split(",") if v
}  # at these M only (empty: all)


class K:
    tiled = staticmethod(T.gptq_tiled_matmul)


def _old_plan() -> Callable[..., dict[str, Any] | None] | None:
    """The `rswg_plan` of the file WGMMA_OLD_PLAN names, or None."""
    path = os.environ.get("WGMMA_OLD_PLAN")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("old_rswg_plan", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"WGMMA_OLD_PLAN: cannot load {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rswg_plan  # type: ignore[no-any-return]


OLD_PLAN = _old_plan()
_WANT = os.environ.get("WGMMA_SHAPES", ",".join(GB.SHAPES_LABELS)).split(",")
if bad := [w for w in _WANT if w not in GB.SHAPES_LABELS]:
    raise SystemExit(f"WGMMA_SHAPES: unknown shapes {bad}; allowed: {', '.join(GB.SHAPES_LABELS)}")
SHAPES = tuple(s for s in GB.SHAPES if s[0] in _WANT)


def log(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


def ws_variants(m: int, k_in: int, n_out: int, sms: int, bits: int = 4) -> list[tuple[str, dict[str, Any]]]:
    """The warp-specialized kernel: its plan, then split-K half and double, stream-K (or split-K where the
    plan takes stream-K), the vectorized split-K sum, 128 rows a CTA (split 1/2/4, stream-K), x by cp.async
    (and the ablations with PROBES)."""
    plan = rswg_plan(m, n_out, k_in, sms, bits)
    if plan is None:
        return []
    s, blocks = int(plan["split_k"]), k_in // 128
    tag = "sk" if plan["sk"] else f"s{s}"
    out: list[tuple[str, dict[str, Any]]] = [(f"ws/{tag}", {})]
    alt = [(2, {"split_k": 2, "sk": 0}), (4, {"split_k": 4, "sk": 0})] if plan["sk"] else []
    alt += [
        (d, {"split_k": d}) for d in (s // 2, 2 * s) if not plan["sk"] and 1 <= d <= min(8, blocks) and d != s
    ]
    out += [(f"ws/s{d}", c) for d, c in alt]
    if not plan["sk"]:
        out.append(("ws/sk", {"split_k": 1, "sk": 1}))
    if s > 1 and not plan["sk"]:
        out.append((f"ws/s{s}/novred", {"vred": 0}))
        out.append((f"ws/s{s}/sred", {"sred": 1}))
    if plan["tok"] > 128:  # half the rows a CTA: twice the tiles
        out += [(f"ws/t128/s{d}", {"tok": 128, "stages": 4, "split_k": d, "sk": 0, "vred": int(d > 1)})
                for d in (1, 2, 4) if d <= blocks]  # fmt: skip
        out.append(("ws/t128/s2/sred", {"tok": 128, "stages": 4, "split_k": 2, "sk": 0, "sred": 1}))
        out.append(("ws/t128/sk", {"tok": 128, "stages": 4, "split_k": 1, "sk": 1, "vred": 0}))
    if (n_out // (64 * int(plan["ncw"]))) % 2 == 0 and m > 128:  # x multicast to 2 column tiles (split 1)
        out.append(
            (
                "ws/mc" if s == 1 and not plan["sk"] else "ws/s1/mc",
                {"split_k": 1, "sk": 0, "vred": 0, "mc": 1},
            )
        )
    if plan["tok"] > 64 and m <= 256:  # 64 rows a CTA, two CTAs an SM (split 1 and 2)
        out += [(f"ws/t64m2/s{d}", {"tok": 64, "minb": 2, "stages": 3 if bits == 8 else 4, "split_k": d, "sk": 0,
                                    "vred": int(d > 1)}) for d in (1, 2)]  # fmt: skip
    if (
        plan["tok"] > 128 and plan["ncw"] == 2
    ):  # one 64-column strip a CTA: twice the column tiles (split 1, 2)
        out += [
            (f"ws/n1/s{d}", {"ncw": 1, "split_k": d, "sk": 0, "vred": int(d > 1), "stages": 3})
            for d in (1, 2)
        ]
    if plan["tok"] > 128 and m <= 512:  # one 64-column strip and 128 rows a CTA, two CTAs an SM
        out.append(
            ("ws/t128n1m2", {"tok": 128, "ncw": 1, "minb": 2, "stages": 3, "split_k": 1, "sk": 0, "vred": 0})
        )
    if (n_out // 64) % 3 == 0 and m >= 32:  # 3 strips a CTA (qkv's 96 strips: 32 column tiles), ≤ 128 rows
        t3 = rswg_tok(m, 128)
        out += [(f"ws/c3/t{t3}/s{d}", {"ncw": 3, "tok": t3, "minb": 1, "split_k": d, "sk": 0, "vred": int(d > 1),
                                        "stages": ring_stages(t3, d, 3, 1, bits)})
                for d in (1, 2, 4) if d <= blocks]  # fmt: skip
    if s == 1 and not plan["sk"]:  # the outputs through shared memory, by 16-byte stores
        out.append((f"ws/{tag}/os", {"ostage": 1}))
    if PROBES and (
        not PROBE_MS or m in PROBE_MS
    ):  # ablations (wrong results, timed unchecked): what the kernel costs without each part
        out += [(f"ws/{tag}/p{p}", {"probe": p}) for p in (1, 2, 3, 4, 5, 6)]
        out.append((f"ws/{tag}/cpasync", {"tma": 0}))
    extra = GB.named_configs(os.environ.get("WGMMA_EXTRA", ""))  # "name:{json config};..."
    out += [(f"ws/{name}", c) for name, c in extra]
    if OLD_PLAN is not None and (old := OLD_PLAN(m, n_out, k_in, sms, bits)) is not None:
        out.append(("ws/old", dict(old)))  # every key set: with_config gives the old plan itself
    if only := os.environ.get("WGMMA_ONLY"):  # a regex: the plan and the variants whose names match it
        out = out[:1] + [(name, c) for name, c in out[1:] if re.search(only, name)]
    if os.environ.get("WGMMA_NO_TMA") == "1":
        out = [(name, c | {"tma": 0}) for name, c in out]
    return out


def _bf16(lay: SimpleNamespace) -> SimpleNamespace:
    """The layer with bf16 scales and a bf16 dense weight (for cuBLAS and the check)."""
    return SimpleNamespace(
        **(vars(lay) | {"t": lay.t | {"scales": lay.t["scales"].bfloat16()}, "w": lay.w.bfloat16()})
    )


def run(ms: tuple[int, ...], bw: float, bits: int = 4, bf16: bool = False) -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    log(f"## {bits}-bit g128, {'bf16' if bf16 else 'fp16'}")
    t0 = time.time()
    specs = []
    for m in ms:
        for _, k_in, n_out in SHAPES:
            for _, c in ws_variants(m, k_in, n_out, sms, bits):
                plan = with_config(rswg_plan(m, n_out, k_in, sms, bits), c)  # type: ignore[arg-type]
                # as its row's call merges it (`maybe_wgmma`); a variant the spec refuses fails in its row
                with contextlib.suppress(ValueError):
                    specs.append(rswg_spec(plan, bf16=bf16, zero_v1=True, bits=bits))
    errors: list[str] = []
    done = precompile(specs, torch.device("cuda"), threads=min(16, os.cpu_count() or 1), errors=errors)
    log(f"precompiled {done} of {len(set(specs))} warp-specialized kernels in {time.time() - t0:.1f} s")
    if errors:
        log(f"  first precompile failure: {errors[0]}")
    kind = "int8" if bits == 8 else "plain"
    benches = {label: GB.Bench(k_in, n_out, (kind,)) for label, k_in, n_out in SHAPES}
    if bf16:
        for b in benches.values():
            b.layers[kind] = [_bf16(lay) for lay in b.layers[kind]]
    for m in ms:
        for label, k_in, n_out in SHAPES:
            layers = benches[label].layers[kind]
            xs = benches[label].xs(m, len(layers), torch.bfloat16 if bf16 else torch.float16)
            runs: list[tuple[str, Callable[..., Any]]] = [
                ("cuBLAS", lambda lay, x: torch.matmul(x, lay.w)),
                ("default", lambda lay, x: GB.ours(K, lay, x)),
                ("prev", lambda lay, x: GB.ours(K, lay, x, {"wgmma": False})),  # the dispatch without wgmma
            ]
            runs += [
                (name, lambda lay, x, c=c: GB.ours(K, lay, x, {"kernel": "cuda", "wgmma": True} | c))
                for name, c in ws_variants(m, k_in, n_out, sms, bits)
            ]
            times: dict[str, float] = {}
            for name, fn in runs:
                if time.time() - T0 > BUDGET_S:
                    log(f"  {label} M={m} {name}: skipped (budget)")
                    continue
                try:
                    if "/p" in name:  # an ablation: its results are wrong by design
                        calls = [partial(fn, layers[i], xs[i]) for i in range(len(layers))]
                        times[name] = graph_us(calls)
                        err = float("nan")
                    else:
                        times[name], err = GB.checked_time(
                            name, fn, layers, xs, graph_us, 2e-2 if bf16 else 5e-3
                        )
                except Exception as e:  # noqa: BLE001 - one failing variant must not hide the row
                    log(f"  {label} M={m} {name}: FAILED {type(e).__name__}: {str(e)[:300]}")
                    continue
                cub = times.get("cuBLAS", float("nan"))
                nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
                log(f"  {label} M={m} {name:<10} {times[name]:7.2f} us ({nbytes / (times[name] * 1e-6) / bw:4.0%} HBM, "
                    f"{cub / times[name]:4.2f}x cuBLAS, {2 * m * k_in * n_out / times[name] / 1e6:4.0f} TFLOPS) err {err:.1e}")  # fmt: skip
            cub = times.get("cuBLAS", float("nan"))
            dflt = times.get("default", float("nan"))
            line = f"WGMMA{bits}{'bf' if bf16 else ''} {label} {k_in}x{n_out} M={m}: cuBLAS {cub:.2f} | default {dflt:.2f} ({cub / dflt:.2f}x)"
            prev = times.get("prev", float("nan"))
            line += f" | prev {prev:.2f} ({cub / prev:.2f}x)"
            wg = {n_: t for n_, t in times.items() if n_.startswith("ws/") and "/p" not in n_}
            best = min(wg, key=wg.__getitem__) if wg else "-"
            bt = wg.get(best, float("nan"))
            line += (
                f" | ws {bt:.2f} {best} ({cub / bt:.2f}x cuBLAS, {prev / bt:.2f}x prev, "
                f"{2 * m * k_in * n_out / bt / 1e6:.0f} TFLOPS)"
            )
            log(line)


def main() -> int:
    log(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | cc {torch.cuda.get_device_capability()}"
    )
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    # the M = 64 and M ≥ 256 targets first, in case the budget runs out
    ms: tuple[int, ...] = (64, 256, 1024, 128, 512, 32)
    if "--ms" in sys.argv:
        ms = tuple(int(v) for v in sys.argv[sys.argv.index("--ms") + 1].split(","))
    bits_list: tuple[int, ...] = (4,)
    if "--bits" in sys.argv:
        bits_list = tuple(int(v) for v in sys.argv[sys.argv.index("--bits") + 1].split(","))
    for bits in bits_list:
        run(ms, bw, bits, bf16="--bf16" in sys.argv)
    log(f"wall {time.time() - T0:.1f} s")
    if out := os.environ.get("OUT"):
        Path(out, "gptq_wgmma.txt").write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
