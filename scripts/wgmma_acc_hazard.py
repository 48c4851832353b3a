"""Scan the wgmma GPTQ kernel's SASS for reads of the wgmma accumulators scheduled before the wait that covers them.

In the eleventh session (docs/benchmarks.md) ptxas scheduled fp16 conversions of the accumulators above
`WARPGROUP.DEPBAR.LE gsb0, 0x0` (the SASS of `wgmma.wait_group 0`): they read sums the last wgmmas had not
written yet, and the results were 2-4% wrong on the GPU. This check needs no GPU: it writes the kernel text of
each epilogue variant (stores, staged stores, cluster sums, bands, stream-K, multicast; 4 and 8 bits), compiles
it for sm_90a with nvcc, disassembles it with nvdisasm (the `nvidia-cuda-nvdisasm` wheel has one), and reports any
instruction between an HGMMA and the next full wait that reads an HGMMA accumulator register. Exit 1 on a finding.

Usage:
    .venv/bin/python scripts/wgmma_acc_hazard.py --nvdisasm /path/to/nvdisasm [--nvcc nvcc] [--out build/hazard]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import RswgSpec, rswg_kernel_source  # noqa: E402

# (tok, split, sk, vred, sred, ostage, ncw, minb, bits, mc): every epilogue path of the kernel
VARIANTS = [
    (64, 1, 0, 0, 0, 0, 2, 2, 4, 0),  # stores from the fragments
    (64, 1, 0, 0, 0, 1, 2, 2, 4, 0),  # staged stores
    (256, 1, 0, 0, 0, 1, 2, 1, 4, 1),  # staged, x multicast
    (128, 1, 0, 0, 0, 1, 3, 1, 4, 0),  # staged, three strips
    (256, 1, 0, 0, 0, 0, 2, 1, 8, 0),  # 8 bits
    (64, 4, 0, 1, 0, 0, 2, 2, 4, 0),  # cluster sum, 4 floats a load
    (64, 4, 0, 0, 0, 0, 2, 2, 4, 0),  # cluster sum, a float a load
    (64, 4, 0, 0, 1, 0, 2, 2, 4, 0),  # sums by row bands (st.async)
    (128, 2, 0, 1, 0, 0, 1, 1, 4, 0),  # one strip a CTA at split 2 (o_proj, down)
    (64, 2, 0, 1, 0, 0, 1, 1, 8, 0),
    (64, 1, 1, 0, 0, 0, 2, 2, 4, 0),  # stream-K
    (200, 4, 0, 1, 0, 0, 2, 1, 4, 0),
]


def early_reads(sass: str) -> list[str]:
    """The instructions that read an HGMMA accumulator register while an HGMMA may still be writing it."""
    lines = [ln.split("*/", 1)[1].strip() for ln in sass.splitlines() if re.search(r"/\*[0-9a-f]{4}\*/", ln)]
    accs: set[int] = set()
    for ln in lines:
        m = re.search(r"HGMMA\.64x(\d+)x\d+\S* R(\d+),", ln)
        if m:
            accs |= set(range(int(m.group(2)), int(m.group(2)) + int(m.group(1)) // 2))
    found, pending = [], False
    for ln in lines:
        if "HGMMA" in ln:
            pending = True
        elif "WARPGROUP.DEPBAR.LE gsb0, 0x0" in ln:
            pending = False
        elif pending and "WARPGROUP" not in ln:
            sources = " ".join(ln.split(";")[0].split()[2:])  # after the opcode and the destination
            if any(int(r) in accs for r in re.findall(r"\bR(\d+)\b", sources)):
                found.append(ln)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvdisasm", required=True)
    ap.add_argument("--nvcc", default="nvcc")
    ap.add_argument("--out", default=str(ROOT / "build" / "wgmma_acc_hazard"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for tok, split, sk, vred, sred, ostage, ncw, minb, bits, mc in VARIANTS:
        spec = RswgSpec(bf16=False, tok=tok, split=split, zero_v1=True, stages=2 if tok > 128 else 3, ncw=ncw,
                        minb=minb, vred=bool(vred), sk=bool(sk), tma=True, bits=bits, sred=bool(sred), mc=bool(mc),
                        ostage=bool(ostage))  # fmt: skip
        name = f"t{tok}_s{split}_sk{sk}_v{vred}_r{sred}_o{ostage}_n{ncw}_m{minb}_b{bits}_mc{mc}"
        cu, cubin = out / f"{name}.cu", out / f"{name}.cubin"
        cu.write_text(rswg_kernel_source(spec))
        subprocess.run([args.nvcc, "-arch=sm_90a", "-cubin", "-o", str(cubin), str(cu)], check=True,
                       capture_output=True)  # fmt: skip
        sass = subprocess.run(
            [args.nvdisasm, "-c", str(cubin)], check=True, capture_output=True, text=True
        ).stdout
        found = early_reads(sass)
        bad += bool(found)
        print(f"{name}: {len(found)} early accumulator reads" + (f", first: {found[0]}" if found else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
