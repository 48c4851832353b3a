"""The warp-specialized Hopper GPTQ kernel (`gptq_cuda_ws.py`) against the default dispatch and cuBLAS fp16.

`python benchmarks/gpu_gptq_ws.py [--ms 64,256,1024,128,512]`: the four Llama-3-8B shapes (plain
4-bit g128, fp16) at each M: cuBLAS fp16 on the dense weight, the default dispatch of
`gptq_tiled_matmul` (no config), and the warp-specialized kernel at its plan (`ws_plan`) and a few
neighbours (the other column tile, half and double the split-K). Device time from CUDA-graph
replays with every operand rotated over enough copies that L2 stays cold (`gpu_gptq.Bench`); each
variant is checked against x.float() @ W first. Writes the lines to $OUT/gptq_ws.txt. WS_BUDGET_S
(default 60) stops timing new rows once spent.
"""

# ruff: noqa: E731, N812
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gpu import copy_bandwidth, graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_tiled as T  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_ws import gptq_ws_matmul, ring_plan, ws_plan  # noqa: E402

LINES: list[str] = []
T0 = time.time()
BUDGET_S = float(os.environ.get("WS_BUDGET_S", "60"))


class K:
    tiled = staticmethod(T.gptq_tiled_matmul)


def log(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


def variants(m: int, k_in: int, n_out: int, sms: int) -> list[dict[str, int]]:
    """The plan first, then the other column tile and half/double split-K where they are valid."""
    plan = ws_plan(m, n_out, k_in, 4, sms)
    if plan is None:
        return []
    out = [plan]
    if (plan["bm"], plan["bn"]) != (128, 256):  # the other producer count
        out.append(ring_plan(plan["bm"], plan["bn"], plan["split_k"], 0, 3 - plan["nprod"]))
    blocks = k_in // 128
    other_bn = 384 - plan["bn"]
    if n_out % other_bn == 0:
        out.append(ring_plan(plan["bm"], other_bn, plan["split_k"]))
    for s in (plan["split_k"] // 2, plan["split_k"] * 2):
        if 1 <= s <= 8 and blocks % s == 0 and s != plan["split_k"]:
            out.append(ring_plan(plan["bm"], plan["bn"], s))
    tiles = -(-m // plan["bm"]) * (n_out // plan["bn"])
    if tiles > sms:  # persistent: one CTA an SM looping over the tiles
        out.append(ring_plan(plan["bm"], plan["bn"], 1, sms))
    return out


def name_of(p: dict[str, int]) -> str:
    return f"ws/{p['bm']}x{p['bn']}s{p['split_k']}w{p['nprod']}" + (f"p{p['ctas']}" if p.get("ctas") else "")


def run(ms: tuple[int, ...], bw: float) -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    benches = {label: GB.Bench(k_in, n_out, ("plain",)) for label, k_in, n_out in GB.SHAPES}
    for m in ms:
        for label, k_in, n_out in GB.SHAPES:
            layers = benches[label].layers["plain"]
            xs = benches[label].xs(m, len(layers))
            runs: list[tuple[str, Callable[..., Any]]] = [
                ("cuBLAS", lambda lay, x: torch.matmul(x, lay.w)),
                ("default", lambda lay, x: GB.ours(K, lay, x)),
            ]
            runs += [
                (
                    name_of(p),
                    lambda lay, x, p=p: gptq_ws_matmul(
                        x,
                        lay.r["qweight"],
                        lay.t["scales"],
                        lay.r["qzeros"],
                        bits=4,
                        group_size=GB.GROUP,
                        plan=p,
                    ),
                )  # fmt: skip
                for p in variants(m, k_in, n_out, sms)
            ]
            times: dict[str, float] = {}
            for name, fn in runs:
                if time.time() - T0 > BUDGET_S:
                    log(f"  {label} M={m} {name}: skipped (budget)")
                    continue
                try:
                    times[name], err = GB.checked_time(name, fn, layers, xs, graph_us, 5e-3)
                except Exception as e:  # noqa: BLE001 - one failing variant must not hide the row
                    log(f"  {label} M={m} {name}: FAILED {type(e).__name__}: {str(e)[:300]}")
                    continue
                cub = times.get("cuBLAS", float("nan"))
                log(f"  {label} M={m} {name:<16} {times[name]:8.2f} us  {cub / times[name]:4.2f}x cuBLAS  "
                    f"{2 * m * k_in * n_out / times[name] / 1e6:4.0f} TFLOPS  err {err:.1e}")  # fmt: skip
            ws = {n_: t for n_, t in times.items() if n_.startswith("ws/")}
            best = min(ws, key=ws.__getitem__) if ws else "-"
            cub = times.get("cuBLAS", float("nan"))
            dflt = times.get("default", float("nan"))
            bt = ws.get(best, float("nan"))
            log(f"WS {label} {k_in}x{n_out} M={m}: cuBLAS {cub:.2f} | default {dflt:.2f} ({cub / dflt:.2f}x) | "
                f"ws {bt:.2f} {best} ({cub / bt:.2f}x cuBLAS, {dflt / bt:.2f}x default, "
                f"{2 * m * k_in * n_out / bt / 1e6:.0f} TFLOPS)")  # fmt: skip


def main() -> int:
    log(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | cc {torch.cuda.get_device_capability()}"
    )
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    ms: tuple[int, ...] = (64, 256, 1024, 128, 512)  # the targets' M first, in case the budget runs out
    if "--ms" in sys.argv:
        ms = tuple(int(v) for v in sys.argv[sys.argv.index("--ms") + 1].split(","))
    run(ms, bw)
    log(f"wall {time.time() - T0:.1f} s")
    if out := os.environ.get("OUT"):
        Path(out, "gptq_ws.txt").write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
