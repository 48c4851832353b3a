"""Is a GPTQ cell bound by HBM? The default dispatch timed with its weights cold and warm in L2, side by side.

`python benchmarks/gptq_warm_cold.py [--ms 1,16,64] [--shapes qkv,o_proj,gate_up,down]`: for each Llama-3-8B shape
(4-bit g128, fp16) and M, the CUDA-graph device time of 24 chained calls of `gptq_tiled_matmul` (as `gpu.py` times
them) with the operands rotated over copies past the L2 ("cold": every weight byte comes from HBM) and with one copy
replayed ("warm": the weight stays in L2 where it fits; the L2's size is printed, and a weight larger than it, as
gate_up's 60 MB, is only partly warm). A cell whose warm time is well under its cold time waits on HBM; one whose warm time is
about the same is bound inside the SMs (its loads' latency, dequantization, MMAs, launch), and no deeper prefetch
from HBM can speed it up. Each cell is checked against `x.float() @ W` first. Writes $OUT/gptq_warm_cold.txt.
"""

# ruff: noqa: N812
from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402
from gptq_sweep_kit import K  # noqa: E402
from gpu import copy_bandwidth, graph_us  # noqa: E402


def _arg(name: str, default: str) -> list[str]:
    return (sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default).split(",")


def main() -> int:
    props = torch.cuda.get_device_properties(0)
    lines = [f"GPU: {props.name} | torch {torch.__version__} | L2 {props.L2_cache_size / 2**20:.0f} MiB"]
    bw = copy_bandwidth()
    lines.append(f"copy bandwidth {bw / 1e12:.2f} TB/s; µs of the default dispatch, 24 chained calls a graph")
    print("\n".join(lines), flush=True)
    torch.manual_seed(0)
    ms = [int(v) for v in _arg("--ms", "1,16,64")]
    shapes = [s for s in GB.SHAPES if s[0] in _arg("--shapes", ",".join(GB.SHAPES_LABELS))]
    for label, k_in, n_out in shapes:
        bench = GB.Bench(k_in, n_out, ("plain",))
        layers = bench.layers["plain"]
        nbytes = GB.quant_bytes(k_in, n_out, 4)
        lines.append(
            f"{label}: {nbytes / 2**20:.1f} MiB of weight bytes, {len(layers)} copies rotated when cold"
        )
        print(lines[-1], flush=True)
        for m in ms:
            xs = bench.xs(m, len(layers))
            cold, err = GB.checked_time(
                f"{label} M={m}", lambda lay, x: GB.ours(K, lay, x), layers, xs, graph_us
            )
            warm = graph_us([partial(GB.ours, K, layers[0], xs[0])])
            lines.append(
                f"{label:8} {k_in}x{n_out} M={m:<4} cold {cold:7.2f} us ({nbytes / (cold * 1e-6) / bw:4.0%} of copy) | "
                f"warm {warm:7.2f} us | cold/warm {cold / warm:4.2f} | err {err:.1e}"
            )
            print(lines[-1], flush=True)
        del bench
        torch.cuda.empty_cache()
    if out := os.environ.get("OUT"):
        Path(out, "gptq_warm_cold.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
