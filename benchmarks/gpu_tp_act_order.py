"""What one tensor-parallel rank runs for an act-order Llama-3-8B `down_proj` (14336x4096, 4-bit g128), before and
after the MLP channels went to the ranks in the weight's group order (`fusegraph/distributed/act_order_mlp.py`).

`python benchmarks/gpu_tp_act_order.py` (one GPU; rank 0's shard of TP = 2 and 4):

- **index order** (the split before): rank r takes rows [r·K/n, (r+1)·K/n); every group has rows on every rank, so
  the shard duplicates their scales and declares a smaller group size (64 at TP=2), which `gptq-repack` refuses:
  the shard runs `fg.qmatmul.gptq`'s Triton GEMM through its g_idx;
- **group order** (now): rank r takes the channels `argsort(g_idx)[r·K/n, (r+1)·K/n)`: whole groups, a plain g128
  shard, repacked, on the CUDA kernels.

First each shard is compiled alone with `fusegraph.compile` on CUDA (which op the pipeline leaves: the check that the
table times what the runtime runs) and checked against `x @ W[rows]` from the checkpoint's integers; then the CUDA-graph
device time of the kernel each runs (weights rotated past the L2), cuBLAS fp16 on the shard's dense rows, and the
share of the measured copy bandwidth that the shard's int4 bytes (plus scales and zeros) take.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_gptq as GB  # noqa: E402, N812
from gpu import copy_bandwidth, graph_us  # noqa: E402

from fusegraph.distributed.act_order_mlp import mlp_channels  # noqa: E402
from fusegraph.distributed.shards import DictSource, row_group_size, shard_state  # noqa: E402
from fusegraph.nn.quant import QuantizationConfig  # noqa: E402
from fusegraph.nn.sharding import ShardingStrategy  # noqa: E402
from fusegraph.ops.gptq_layout import repack  # noqa: E402
from fusegraph.runtime.kernels.gptq_matmul import gptq_matmul_triton  # noqa: E402
from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul  # noqa: E402

K_IN, N_OUT, GROUP, MS = 14336, 4096, 128, (1, 16, 64)
CFG = QuantizationConfig(bits=4, group_size=GROUP, desc_act=True, sym=False)
NAMES = [f"mlp.down_proj.{p}" for p in ("qweight", "qzeros", "scales", "g_idx")]


def checkpoint(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """An act-order down_proj's AutoGPTQ tensors (v1 zeros; every group exactly 128 rows, scattered) and W [K, N]."""
    gen = torch.Generator().manual_seed(seed)
    groups = K_IN // GROUP
    q = torch.randint(0, 16, (K_IN, N_OUT), generator=gen, dtype=torch.int32)
    z = torch.randint(1, 16, (groups, N_OUT), generator=gen, dtype=torch.int32)
    scales = (torch.rand(groups, N_OUT, generator=gen) * 0.004 + 0.001).half()
    g_idx = (torch.arange(K_IN) // GROUP)[torch.randperm(K_IN, generator=gen)]
    w = (q - z[g_idx]).float() * scales[g_idx].float()
    t = {"qweight": GB.pack_rows(q, 4), "qzeros": GB.pack_rows((z - 1).t().contiguous(), 4).t().contiguous(),
         "scales": scales, "g_idx": g_idx.to(torch.int32)}  # fmt: skip
    return {f"mlp.down_proj.{k}": v for k, v in t.items()}, w


def shard(full: dict[str, torch.Tensor], tp: int, by_groups: bool) -> dict[str, Any]:
    """Rank 0's down_proj shard, its declared GPTQ settings, and the checkpoint rows it holds."""
    layout = ShardingStrategy.tensor_parallel(tp).layout(
        n_heads=32, n_kv_heads=8, head_dim=128, intermediate_size=K_IN
    )
    src, rows = DictSource(full), range(0, K_IN // tp)
    part = shard_state(src, layout, 0, CFG, NAMES, mlp_by_groups=by_groups)
    t = {k.rpartition(".")[2]: v for k, v in part.items()}
    if by_groups:
        channels = mlp_channels(src, "mlp", layout, 0, CFG)
        assert channels is not None
        return {"t": t, "rows": channels, "group_size": GROUP, "desc_act": False}
    size = row_group_size(src, "mlp.down_proj", rows, CFG)
    return {"t": t, "rows": torch.arange(rows.start, rows.stop), "group_size": size, "desc_act": True}


def compiled_op(s: dict[str, Any], x: torch.Tensor, want: torch.Tensor) -> str:
    """Compile the shard alone for CUDA; check its output; name the matmul op the pipeline left."""
    from fusegraph import DeviceRef, DType, Graph, TensorType, compile, ops  # noqa: A004

    dev = DeviceRef.GPU()
    with Graph("down_shard", input_types=[TensorType(DType.float16, ["m", x.shape[1]], dev)]) as g:
        (xv,) = g.inputs
        bound = {k: v.cuda() for k, v in s["t"].items() if s["desc_act"] or k != "g_idx"}
        w = {
            k: g.add_weight(k, TensorType(DType.from_torch(v.dtype), list(v.shape), dev))
            for k, v in bound.items()
        }
        y = ops.qmatmul_gptq(xv, w["qweight"], w["scales"], w["qzeros"], w.get("g_idx"),
                             bits=4, group_size=s["group_size"], sym=False, desc_act=s["desc_act"])  # fmt: skip
        g.output(y)
    model = compile(g, backend="eager", device="cuda", weights=bound)
    (got,) = model(x)
    err = float((got.float() - want).norm() / want.norm())
    assert err < 5e-3, f"compiled shard: relative error {err:.3g}"
    text = str(model.graph)
    return "fg.qmatmul.gptq_tiled" if "fg.qmatmul.gptq_tiled" in text else "fg.qmatmul.gptq"


@dataclass
class Shards:
    """Rank 0's down_proj of one TP size on the GPU, both ways, in rotated copies."""

    k: int
    copies: int
    gs_old: int
    old: list[dict[str, torch.Tensor]]
    new: list[dict[str, torch.Tensor]]
    new_scales: list[torch.Tensor]
    dense: list[torch.Tensor]

    def index_order(self, x: torch.Tensor, i: int) -> torch.Tensor:
        t = self.old[i % self.copies]
        return gptq_matmul_triton(x, t["qweight"], t["scales"], t["qzeros"], t["g_idx"], bits=4,
                                  group_size=self.gs_old, zero_format="v1", desc_act=True)  # fmt: skip

    def group_order(self, x: torch.Tensor, i: int) -> torch.Tensor:
        r = self.new[i % self.copies]
        return gptq_tiled_matmul(x, r["qweight"], self.new_scales[i % self.copies], r["qzeros"], None, bits=4,
                                 group_size=GROUP, zero_format="v1")  # fmt: skip

    def cublas(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x @ self.dense[i % self.copies]


def on_gpu(full: dict[str, torch.Tensor], w_full: torch.Tensor, tp: int, before: dict[str, Any],
           after: dict[str, Any]) -> Shards:  # fmt: skip
    k = K_IN // tp
    copies = GB.copies_for(GB.quant_bytes(k, N_OUT, 4))
    return Shards(
        k, copies, before["group_size"],
        [{name: v.cuda() for name, v in before["t"].items()} for _ in range(copies)],
        [repack(after["t"]["qweight"].cuda(), after["t"]["qzeros"].cuda(), None, bits=4, group_size=GROUP, sym=False,
                desc_act=False, zero_format="v1") for _ in range(copies)],
        [after["t"]["scales"].cuda() for _ in range(copies)],
        [w_full[after["rows"]].half().cuda() for _ in range(copies)],
    )  # fmt: skip


def main() -> None:
    bw = copy_bandwidth()
    print(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | copy {bw / 1e12:.2f} TB/s",
        flush=True,
    )
    full, w_full = checkpoint(0)
    for tp in (2, 4):
        before, after = shard(full, tp, by_groups=False), shard(full, tp, by_groups=True)
        x0 = torch.randn(3, K_IN // tp, device="cuda", dtype=torch.float16)
        ran = {
            n: compiled_op(s, x0, x0.float() @ w_full[s["rows"]].cuda())
            for n, s in (("index", before), ("group", after))
        }
        print(f"TP={tp} rank 0 down_proj K={K_IN // tp}: index order declares group_size {before['group_size']} "
              f"({before['t']['scales'].shape[0]} scale rows) and runs {ran['index']}; group order "
              f"group_size {GROUP} ({after['t']['scales'].shape[0]} scale rows), {ran['group']}", flush=True)  # fmt: skip
        sh = on_gpu(full, w_full, tp, before, after)
        floor = GB.quant_bytes(sh.k, N_OUT, 4) / bw * 1e6
        for m in MS:
            xs = [torch.randn(m, sh.k, device="cuda", dtype=torch.float16) for _ in range(sh.copies)]
            for name, fn, s in (
                ("index order", sh.index_order, before),
                ("group order", sh.group_order, after),
            ):
                want = xs[0].float() @ w_full[s["rows"]].cuda()
                err = float((fn(xs[0], 0).float() - want).norm() / want.norm())
                assert err < 5e-3, f"TP={tp} M={m} {name}: relative error {err:.3g}"
            us = {
                name: graph_us([functools.partial(fn, xs[i], i) for i in range(sh.copies)])
                for name, fn in (("index order", sh.index_order), ("group order", sh.group_order),
                                 ("cuBLAS fp16", sh.cublas))
            }  # fmt: skip
            cells = " | ".join(f"{n} {v:7.2f} us ({floor / v:4.0%})" for n, v in us.items())
            print(f"TP={tp} M={m:<3} {cells} || index/group {us['index order'] / us['group order']:.2f}x "
                  f"cuBLAS/group {us['cuBLAS fp16'] / us['group order']:.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
