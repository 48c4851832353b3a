"""Drive the default GPTQ kernels once each under Nsight Compute (`ncu --profile-from-start off`).

`ncu --profile-from-start off --clock-control none --section ... python3 benchmarks/gptq_ncu.py`: the
kernels are compiled and warmed first, then profiling starts for one call of each (shape, M). GPTQ_NCU_SHAPES
(labels of `gpu_gptq.SHAPES`, default qkv) and GPTQ_NCU_MS (default 1,16,64) pick the calls; GPTQ_NCU_BITS (4 or 8)
the bits. Each profiled call is preceded by an NVTX-free marker launch (a tiny `torch.zeros`) so the report's
kernels read in order.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402, N812
from gptq_sweep_kit import K  # noqa: E402


def main() -> None:
    labels = os.environ.get("GPTQ_NCU_SHAPES", "qkv").split(",")
    ms = [int(v) for v in os.environ.get("GPTQ_NCU_MS", "1,16,64").split(",")]
    bits = int(os.environ.get("GPTQ_NCU_BITS", "4"))
    shapes = {label: (k_in, n_out) for label, k_in, n_out in GB.SHAPES}
    calls = []
    for label in labels:
        k_in, n_out = shapes[label]
        layer = GB.make_layer(k_in, n_out, bits=bits)
        for m in ms:
            x = torch.randn(m, k_in, device="cuda", dtype=torch.float16)
            calls.append((f"{label} M={m}", lambda layer=layer, x=x: GB.ours(K, layer, x)))
    for _, call in calls:
        for _ in range(3):
            call()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for name, call in calls:
        print(f"ncu call: {name}", flush=True)
        call()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
