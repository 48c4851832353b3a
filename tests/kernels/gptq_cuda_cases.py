"""What the CUDA GPTQ kernel tests share: a seeded GPTQ layer on the GPU with its float64 math,
one call of the dispatcher, the relative error, and the eager + CUDA-graph replay check.

The reference is `gptq_packing.dequantize` of the checkpoint tensors in float64, never a kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fusegraph.ops.gptq_layout import repack
from fusegraph.ops.gptq_packing import dequantize, pack


def cuda_layer(
    k: int, n: int, bits: int, desc_act: bool, dtype: torch.dtype, seed: int, group_size: int = 128
) -> dict[str, Any]:
    """A seeded [k, n] GPTQ layer (asymmetric, groups of `group_size` rows, -1: one): "w" its float64 weight (the
    math), "r" the repacked tensors on the GPU, "scales" in `dtype` on the GPU, "gen" the generator for x."""
    gen = torch.Generator().manual_seed(seed)
    t = pack(torch.randn(n, k, generator=gen), bits=bits, group_size=group_size, sym=False, desc_act=desc_act)
    w = dequantize(t["qweight"], t["scales"], t["qzeros"], t["g_idx"], bits=bits, group_size=group_size, sym=False,
                   dtype=torch.float64)  # fmt: skip
    r = repack(t["qweight"], t["qzeros"], t["g_idx"] if desc_act else None, bits=bits, group_size=group_size,
               sym=False, desc_act=desc_act)  # fmt: skip
    dev = {key: v.cuda() for key, v in r.items()}
    return {"w": w, "r": dev, "scales": t["scales"].to(dtype).cuda(), "gen": gen, "group_size": group_size}


def run_tiled(
    layer: dict[str, Any], x: torch.Tensor, bits: int, config: dict[str, Any] | None
) -> torch.Tensor:
    """`x @ W` through `gptq_tiled_matmul` (the dispatcher: CUDA kernels, else Triton)."""
    from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul

    r = layer["r"]
    return gptq_tiled_matmul(x, r["qweight"], layer["scales"], r["qzeros"], r.get("perm"), bits=bits,
                             group_size=layer["group_size"], config=config)  # fmt: skip


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref||, in float64 on the CPU."""
    return ((y.double().cpu() - ref).norm() / ref.norm()).item()


def check_eager_and_replay(
    call: Callable[[], torch.Tensor], ref: torch.Tensor, tol: float, eager: int = 2, replays: int = 3
) -> None:
    """`call()` matches `ref` within `tol` `eager` times (the split-K tickets must come back zeroed),
    then captured in a CUDA graph and replayed `replays` times into an output poisoned with NaN."""
    for _ in range(eager):
        err = rel_err(call(), ref)
        assert err < tol, f"eager: relative error {err:.3g} >= {tol}"
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = call()
    for _ in range(replays):
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        err = rel_err(y, ref)
        assert err < tol, f"graph replay: relative error {err:.3g} >= {tol}"
