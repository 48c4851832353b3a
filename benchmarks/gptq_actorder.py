"""Act-order and 8-bit on the CUDA GPTQ kernels (issue #11): the four Llama-3-8B shapes on one GPU.

`python benchmarks/gptq_actorder.py`: per M (16, 64, 4, 1, 32 in that order; `ACT_MS`) and shape, 4-bit g128
plain (the default dispatch) against act-order as the default dispatch, the CUDA kernel on x
permuted once ("xperm"), the CUDA kernel gathering x through perm ("gather": the small-M kernel's
staging at M ≤ 4, the mid-M kernel's at M = 16), the small-M kernel gathering column-chunk major
with its loads ahead ("gather2", M ≤ 8), the mid-M kernel gathering a block ahead ("ahead", M ≥ 16)
and the Triton kernels; at M = 16 and 64 (`INT8_MS`) 8-bit as the default
dispatch, the mid-M CUDA kernel and Triton. Also the permutation of x alone. Every variant is
checked against `x.float() @ W.float()` before it is timed as CUDA-graph replays, operands
rotated so that L2 stays cold (`gpu_gptq.checked_time`). Writes $OUT/gptq_actorder.txt (line by line);
`ACT_BUDGET_S` (default 60) skips what is left past that many seconds.
"""

# ruff: noqa: B023, E731, N812
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gpu import copy_bandwidth, graph_us  # noqa: E402

from fusegraph.runtime.kernels import gptq_cuda  # noqa: E402
from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul  # noqa: E402

MS = tuple(int(m) for m in os.environ.get("ACT_MS", "16,64,4,1,32").split(","))
INT8_MS = tuple(int(m) for m in os.environ.get("INT8_MS", "16,64").split(","))
BUDGET_S = float(os.environ.get("ACT_BUDGET_S", "60"))
T0 = time.time()
LINES: list[str] = []


def log(s: str) -> None:
    print(s, flush=True)
    LINES.append(s)
    if out := os.environ.get("OUT"):  # every line at once: a timeout keeps what was measured
        Path(out, "gptq_actorder.txt").write_text("\n".join(LINES) + "\n")


class K:
    tiled = staticmethod(gptq_tiled_matmul)


def act_variants(m: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(name, layer kind, config) of one M, the default dispatch first."""
    out: list[tuple[str, str, dict[str, Any] | None]] = [
        ("plain", "plain", None),
        ("act", "act", None),
        ("xperm", "act", {"kernel": "cuda", "xperm": True}),
    ]
    if m <= 4 or m == 16:
        out.append(("gather", "act", {"kernel": "cuda", "xperm": False}))
    if m <= 8:
        out.append(("gather2", "act", {"kernel": "cuda", "xperm": False, "perm_ahead": True}))
    if m >= 16:
        out.append(("ahead", "act", {"kernel": "cuda", "xperm": False, "mid": True, "perm_ahead": True}))
    out.append(("triton", "act", GB.TRITON))
    if m in INT8_MS:
        out += [("int8", "int8", None), ("int8mid", "int8", {"kernel": "cuda", "mid": True}),
                ("int8tri", "int8", GB.TRITON)]  # fmt: skip
    return out


def permute_alone() -> None:
    for m, k_in in ((1, 4096), (16, 4096), (64, 4096), (16, 14336)):
        x = torch.randn(m, k_in, device="cuda", dtype=torch.float16)
        perm = torch.randperm(k_in, device="cuda").to(torch.int32)
        assert torch.equal(gptq_cuda._permute_x(x, perm), x[:, perm.long()])
        log(f"permute x [{m}, {k_in}] alone: {graph_us([lambda: gptq_cuda._permute_x(x, perm)]):5.2f} us")


def main() -> int:
    log(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {__import__('triton').__version__}"
    )
    bw = copy_bandwidth()
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s; GPTQ g128 fp16, CUDA-graph device time (us), L2 cold")
    torch.manual_seed(0)
    permute_alone()
    failed = 0
    kinds = ("plain", "act", "int8") if INT8_MS else ("plain", "act")
    benches = {label: GB.Bench(k_in, n_out, kinds) for label, k_in, n_out in GB.SHAPES}
    log(f"operands ready: {time.time() - T0:.0f} s")
    for m in MS:  # M-major in the order given (most wanted first), so that a budget cut drops the rest
        for label, k_in, n_out in GB.SHAPES:
            b = benches[label]
            times: dict[str, float] = {}
            cells: list[str] = []
            for name, kind, cfg in act_variants(m):
                if time.time() - T0 > BUDGET_S:
                    cells.append(f"{name} skipped (budget)")
                    continue
                layers = b.layers[kind]
                try:
                    us, err = GB.checked_time(name, lambda lay, x: GB.ours(K, lay, x, cfg), layers,
                                              b.xs(m, len(layers)), graph_us)  # fmt: skip
                except Exception as e:  # noqa: BLE001 - one failing variant must not hide the row
                    failed += 1
                    cells.append(f"{name} FAILED {type(e).__name__}: {str(e)[:160]}")
                    continue
                times[name] = us
                bits = 8 if kind == "int8" else 4
                nbytes = GB.quant_bytes(k_in, n_out, bits) + m * (k_in + n_out) * 2
                cells.append(f"{name} {us:6.2f} ({nbytes / (us * 1e-6) / bw:4.0%})")
            plain = times.get("plain", float("nan"))
            ratios = " ".join(f"{n}/plain {times[n] / plain:.2f}x" for n in ("act", "xperm", "gather", "gather2", "ahead", "triton")
                              if n in times)  # fmt: skip
            if "int8tri" in times:
                ratios += "".join(f" {n}/int8tri {times[n] / times['int8tri']:.2f}x" for n in ("int8", "int8mid")
                                  if n in times)  # fmt: skip
            log(f"ACT {label:<8}{k_in}x{n_out:<6} M={m:<3}" + " | ".join(cells) + f" || {ratios}")
    log(f"total {time.time() - T0:.0f} s, {failed} failed; cuda path: {gptq_cuda.cuda_path_status()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
