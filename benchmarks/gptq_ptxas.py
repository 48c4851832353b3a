"""Registers and spills of the GPTQ small- and mid-M kernels' default specs, from ptxas (no GPU needed).

`python benchmarks/gptq_ptxas.py [--ms 1,4,8,16,32,64] [--shapes qkv,o_proj,gate_up,down] [--mid-early]`: every
distinct spec that `gptq_cuda.maybe_gptq_cuda` would launch for the Llama-3-8B shapes at those M (4 and 8 bits, fp16,
plain and act-order; the runtime's PDL chain as `pdl.gemm_chain` gives it on an H200) is compiled by `nvcc -arch=sm_90a
-Xptxas -v`, and its registers a thread, its `__launch_bounds__` cap and its spill bytes are printed with the cells that
use it. `--mid-early` adds each mid-M spec that the chain leaves without early loads as it would be with them (spec
`pdl`; `FUSEGRAPH_PDL_EARLY=2`, not a default). The twenty-ninth session found this way that gate_up's mid-M plan
(4 CTAs an SM, so 128 registers) spilled with early loads, scales included; with the scales after the wait it spills
no more, but still lost on an H200 (18.8 against 18.4 µs; docs/benchmarks.md).

Needs `nvcc` (CUDA 12.4 or later) on PATH; compiles in parallel threads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec, mid_kernel_source  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_specs import default_specs  # noqa: E402
from fusegraph.runtime.kernels.gptq_cuda_src import KernelSpec, kernel_source  # noqa: E402

SHAPES = {"qkv": (6144, 4096), "o_proj": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
KINDS = [(4, False, False), (8, False, False), (4, False, True)]  # (bits, bf16, act-order)
CHAIN = {"chain": True, "chain_l2": 1, "early": True}  # `pdl.gemm_chain` on sm_90 by default
_REGS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _arg(name: str, default: str) -> list[str]:
    return (sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default).split(",")


def ptxas(source: str, workdir: str, tag: int) -> tuple[int, int, int]:
    """(registers a thread, spill store bytes, spill load bytes) of one kernel's text, from `nvcc -Xptxas -v`."""
    path = os.path.join(workdir, f"k{tag}.cu")
    Path(path).write_text(source)
    cmd = ["nvcc", "-arch=sm_90a", "-c", path, "-o", path + ".o", "-Xptxas", "-v"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    regs, spill = _REGS.search(out.stderr), _SPILL.search(out.stderr)
    if out.returncode or regs is None or spill is None:
        raise RuntimeError(f"nvcc failed on spec {tag}:\n{out.stderr[-2000:]}")
    return int(regs.group(1)), int(spill.group(1)), int(spill.group(2))


def main() -> None:
    if shutil.which("nvcc") is None:
        sys.exit("gptq_ptxas.py needs nvcc on PATH (the CUDA toolkit); no GPU is needed")
    ms = [int(v) for v in _arg("--ms", "1,4,8,16,32,64")]
    cells: dict[KernelSpec | MidSpec, list[str]] = {}
    for shape in _arg("--shapes", ",".join(SHAPES)):
        n, k = SHAPES[shape]
        for m, (bits, _, act), spec in default_specs(n, k, ms, KINDS, sms=132, cap=(9, 0), chain=CHAIN):
            if not isinstance(spec, (KernelSpec, MidSpec)):
                continue  # the wgmma kernel: its own module
            name = f"{shape} M={m} {bits}-bit{' act' if act else ''}"
            cells.setdefault(spec, []).append(name)
            if (
                "--mid-early" in sys.argv
                and isinstance(spec, MidSpec)
                and not spec.pdl
                and not spec.perm_ahead
            ):
                early = replace(spec, pdl=True, chain=False, chain_l2=0)
                cells.setdefault(early, []).append(name + " (mid early, not a default)")
    specs = list(cells)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        texts = [kernel_source(s) if isinstance(s, KernelSpec) else mid_kernel_source(s) for s in specs]
        results = list(pool.map(lambda i: ptxas(texts[i], tmp, i), range(len(specs))))
    print("kernel | warps | split | CTAs an SM (cap) | pdl | chain | regs | spill st/ld B | cells")
    for spec, (regs, st, ld) in sorted(zip(specs, results, strict=True), key=lambda sr: -sr[1][1]):
        kind = "small" if isinstance(spec, KernelSpec) else "mid"
        cap = 65536 // (32 * spec.warps * spec.min_blocks)
        flag = "  SPILLS" if st or ld else ""
        print(f"{kind:5s} | {spec.warps} | {spec.split} | {spec.min_blocks} ({min(cap, 255)}) | {int(spec.pdl)} | "
              f"{int(spec.chain)} | {regs} | {st}/{ld}{flag} | {'; '.join(cells[spec])}")  # fmt: skip


if __name__ == "__main__":
    main()
