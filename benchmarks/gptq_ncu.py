"""Drive the default GPTQ kernels once each under Nsight Compute (`ncu --profile-from-start off`).

`ncu --profile-from-start off --clock-control none --section ... python3 benchmarks/gptq_ncu.py`: the
kernels are compiled and warmed first, then profiling starts for one call at each M (1, 16, 64).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu import random_gptq  # noqa: E402

from fusegraph.runtime.kernels import gptq_matmul as G  # noqa: E402, N812


def main() -> None:
    t, _ = random_gptq(4096, 6144)
    xs = {m: torch.randn(m, 4096, device="cuda", dtype=torch.float16) for m in (1, 16, 64)}
    call = lambda m: G.gptq_matmul_triton(xs[m], t["qweight"], t["scales"], t["qzeros"], None, bits=4,  # noqa: E731
                                          group_size=128, desc_act=False)  # fmt: skip
    for m in xs:
        for _ in range(3):
            call(m)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for m in xs:
        call(m)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
