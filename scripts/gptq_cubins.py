"""Compile the CUDA GPTQ kernels without a GPU: their registers and spills, and whether a change left them identical.

Two sets of kernel instances (`--set`):
- "defaults" (a tree with `gptq_cuda_specs.default_specs`): the kernel each default call runs on an H200 (132 SMs, sm_90, the PDL chain on) for the four
  Llama-3-8B shapes at M = 1..64 and 96..1024 (a few), 4 and 8 bits, fp16 and bf16, plain and act-order. The
  kernels as `gptq_cuda.maybe_gptq_cuda` launches them (`gptq_cuda_specs.default_specs`).
- "spread": specs across each kernel's options (rings, buffers, splits, clusters, tiles, strips, epilogues), for
  checking that a refactor of a kernel's text compiles to the same cubins.

Each distinct kernel text is written to OUT/<kernel>-<n>.cu (OUT/index.txt: name, then the instances that use it)
and compiled with nvcc for sm_90a (`-j` at a time). With `--report`, each cubin's ptxas line (registers, spills) is
printed. With `--against DIR` (an earlier OUT of the same set), each cubin is compared with DIR's cubin of the same
name: "identical", or "differs" (with nvdisasm given, SASS instruction counts too: all, and the main loop's, the
innermost loop holding an HMMA or HGMMA: the K-block loop). The kernels that spill are
listed; exit 1 on a compile failure or a difference. `--tree PATH` builds the texts from another checkout's `fusegraph` (an export of an older commit: run it
there first, then here with `--against`).

Usage:
    .venv/bin/python scripts/gptq_cubins.py --set spread --out build/cubins-old --tree /tmp/old
    .venv/bin/python scripts/gptq_cubins.py --set spread --out build/cubins-new --against build/cubins-old
    .venv/bin/python scripts/gptq_cubins.py --set defaults --out build/cubins --report --nvdisasm nvdisasm
    (nvdisasm: CUDA's, or the `nvidia-cuda-nvdisasm` wheel's nvidia/cu13/bin/nvdisasm)
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"qkv": (6144, 4096), "o_proj": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
HOPPER, SMS, CHAIN = (9, 0), 132, {"chain": True, "chain_l2": 1}


def defaults() -> Iterator[tuple[str, str, str]]:
    """(kernel, instance label, text) of the default dispatch's kernels (`gptq_cuda_specs.default_specs`)."""
    from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec, mid_kernel_source
    from fusegraph.runtime.kernels.gptq_cuda_specs import default_specs
    from fusegraph.runtime.kernels.gptq_cuda_src import kernel_source
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import RswgSpec, rswg_kernel_source

    ms = [*range(1, 65), 96, 128, 256, 512, 1024]
    kinds = [
        (4, False, False),
        (4, True, False),
        (8, False, False),
        (4, False, True),
    ]  # bits, bf16, act-order
    for shape, (n, k) in SHAPES.items():
        for m, (bits, bf16, act), spec in default_specs(n, k, ms, kinds, sms=SMS, cap=HOPPER, chain=CHAIN):
            label = f"{shape} M={m} {bits}-bit{' bf16' if bf16 else ''}{' act-order' if act else ''}"
            if isinstance(spec, RswgSpec):
                yield "wgmma", label, rswg_kernel_source(spec)
            elif isinstance(spec, MidSpec):
                yield "mid", label, mid_kernel_source(spec)
            else:
                yield "small", label, kernel_source(spec)


def spread() -> Iterator[tuple[str, str, str]]:
    """(kernel, spec, text) across each kernel's options; specs a kernel refuses are left out."""
    from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec, mid_kernel_source
    from fusegraph.runtime.kernels.gptq_cuda_src import KernelSpec, kernel_source
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import RswgSpec, rswg_kernel_source

    def made(kind: str, build: Any, source: Any, **fields: Any) -> Iterator[tuple[str, str, str]]:
        try:
            spec = build(**fields)
        except ValueError:
            return
        yield kind, repr(spec), source(spec)

    dtypes, splits = ((4, False), (4, True), (8, False)), ((1, False), (2, True), (4, False))
    small_extra: tuple[dict[str, Any], ...] = ({}, {"cpa": 2}, {"cpa": 3}, {"bufs": 3}, {"tma": 2}, {"fold": True}, {"has_perm": True},
                   {"has_perm": True, "xfull": True}, {"has_perm": True, "cpa": 2}, {"pdl": True},
                   {"chain": True, "chain_l2": 1})  # fmt: skip
    mid_extra: tuple[dict[str, Any], ...] = ({}, {"cpa": 3}, {"bufs": 2}, {"sfold": True}, {"l2pf": 4}, {"has_perm": True},
                 {"has_perm": True, "perm_ahead": True}, {"pdl": True}, {"chain": True, "chain_l2": 1})  # fmt: skip
    for (bits, bf16), mt, (split, cluster) in itertools.product(dtypes, (1, 2), splits):
        base = {"bits": bits, "bf16": bf16, "mt": mt, "split": split, "cluster": cluster, "has_perm": False,
                "zero_v1": True}  # fmt: skip
        for extra in small_extra:
            yield from made(
                "small", KernelSpec, kernel_source, **(base | {"warps": 8, "min_blocks": 1} | extra)
            )
        for extra in mid_extra:
            yield from made(
                "mid", MidSpec, mid_kernel_source, **(base | {"warps": 2, "min_blocks": 2} | extra)
            )
    epilogues = ({"split": 1}, {"split": 1, "ostage": True}, {"split": 2, "vred": True}, {"split": 4, "sred": True},
                 {"split": 1, "sk": True}, {"split": 1, "mc": True})  # fmt: skip
    for tok, tma, bits, end in itertools.product((16, 64, 128, 200), (True, False), (4, 8), epilogues):
        for ncw in (1, 2, 3) if tok == 128 and bits == 4 else (1, 2) if tma else (2,):
            fields = {"bf16": False, "tok": tok, "zero_v1": True, "stages": 3 if tok <= 128 else 2, "ncw": ncw,
                      "minb": 2 if tok <= 64 else 1, "tma": tma, "bits": bits} | end  # fmt: skip
            yield from made("wgmma", RswgSpec, rswg_kernel_source, **fields)
            if (
                ncw == 2 and bits == 4 and end == {"split": 1}
            ):  # bf16, 4 steps in flight, the chain's prefetch
                for extra in ({"bf16": True}, {"infl": 4}, {"pdl": 2}):
                    yield from made("wgmma", RswgSpec, rswg_kernel_source, **(fields | extra))


def compile_one(nvcc: str, cu: Path) -> str:
    """nvcc's ptxas line for `cu` (compiled next to it), or the error."""
    done = subprocess.run([nvcc, "-arch=sm_90a", "-cubin", "-Xptxas", "-v", "-o", str(cu.with_suffix(".cubin")),
                           str(cu)], capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        return "FAILED: " + done.stderr.strip().splitlines()[-1]
    used = re.search(r"Used \d+ registers", done.stderr)
    spill = re.search(r"\d+ bytes spill stores, \d+ bytes spill loads", done.stderr)
    return f"{used.group(0) if used else '?'}, {spill.group(0) if spill else '?'}"


def sass(nvdisasm: str, cubin: Path) -> tuple[list[str], dict[str, int]]:
    """The cubin's SASS instructions in order, and each branch label's index into them."""
    out = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True, check=True).stdout
    instrs: list[str] = []
    labels: dict[str, int] = {}
    for line in out.splitlines():
        if label := re.match(r"\s*(\.L_x_\d+):", line):
            labels[label.group(1)] = len(instrs)
        elif instr := re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?);", line):
            instrs.append(instr.group(1))
    return instrs, labels


def main_loop(instrs: list[str], labels: dict[str, int]) -> int:
    """Instructions in the innermost loop (the shortest backward branch's body) that holds an HMMA or HGMMA: the
    kernel's K-block loop (the wgmma consumer's: a block; the small-M kernel with register buffers: one block a
    buffer), what the sessions' SASS counts compare (0 where there is none)."""
    sizes = []
    for i, instr in enumerate(instrs):
        target = re.search(r"BRA\s+`\((\.L_x_\d+)\)", instr)
        start = labels.get(target.group(1), i) if target else i
        if start < i and any("MMA" in body for body in instrs[start : i + 1]):
            sizes.append(i + 1 - start)
    return min(sizes, default=0)


def sass_counts(nvdisasm: str, cubin: Path) -> tuple[int, int]:
    """(SASS instructions, those of the main loop)."""
    instrs, labels = sass(nvdisasm, cubin)
    return len(instrs), main_loop(instrs, labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("defaults", "spread"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tree", default=str(ROOT), help="the checkout whose fusegraph writes the texts")
    ap.add_argument("--against", help="an earlier OUT of the same set: compare cubins by name")
    ap.add_argument("--report", action="store_true", help="print each kernel's registers and spills")
    ap.add_argument("--nvcc", default="nvcc")
    ap.add_argument("--nvdisasm", help="SASS instruction counts, all and the main loop's: of the cubins that differ"
                    " (--against), of every kernel (--report)")  # fmt: skip
    ap.add_argument("-j", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.tree).resolve()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts: dict[str, tuple[str, list[str]]] = {}  # text -> (name, instances)
    counts: dict[str, int] = {}
    for kernel, label, text in defaults() if args.set == "defaults" else spread():
        if text not in texts:
            counts[kernel] = counts.get(kernel, 0) + 1
            texts[text] = (f"{kernel}-{counts[kernel]:03d}", [])
        texts[text][1].append(label)
    index = []
    for text, (name, labels) in texts.items():
        (out / f"{name}.cu").write_text(text)
        index.append(f"{name}: " + "; ".join(labels))
    (out / "index.txt").write_text("\n".join(index) + "\n")
    names = [name for name, _ in texts.values()]
    texts_by_name = {name: labels for name, labels in texts.values()}
    with ThreadPoolExecutor(args.j) as pool:
        lines = dict(
            zip(names, pool.map(lambda n: compile_one(args.nvcc, out / f"{n}.cu"), names), strict=True)
        )
    bad = [n for n, line in lines.items() if line.startswith("FAILED")]
    spilled = [n for n, line in lines.items() if n not in bad and not line.endswith(" 0 bytes spill loads")]
    if args.report:
        for name, labels in texts.values():
            loop = ""
            if args.nvdisasm and name not in bad:
                loop = ", {} SASS instructions, main loop {}".format(
                    *sass_counts(args.nvdisasm, out / f"{name}.cubin")
                )
            print(
                f"{name}: {lines[name]}{loop} | {labels[0]}"
                + (f" (+{len(labels) - 1} more)" if len(labels) > 1 else "")
            )
    print(f"{len(names)} kernels ({', '.join(f'{k} {v}' for k, v in counts.items())}); {len(bad)} failed"
          + (f": {', '.join(bad[:8])}" if bad else ""))  # fmt: skip
    for name in spilled:
        print(f"spills {name}: {lines[name]} | {texts_by_name[name][0]}")
    if args.against:
        old, differ = Path(args.against), []
        for name in names:
            theirs = old / f"{name}.cubin"
            if not theirs.exists() or theirs.read_bytes() != (out / f"{name}.cubin").read_bytes():
                differ.append(name)
        for name in differ[:20]:
            detail = ""
            if args.nvdisasm and (old / f"{name}.cubin").exists() and name not in bad:
                (was, was_loop), (now, now_loop) = (
                    sass_counts(args.nvdisasm, d / f"{name}.cubin") for d in (old, out)
                )
                detail = f": {was} -> {now} SASS instructions, main loop {was_loop} -> {now_loop}"
            print(f"differs {name}{detail}")
        print(f"against {old}: {len(names) - len(differ)} identical, {len(differ)} differ")
        bad += differ
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
