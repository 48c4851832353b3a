"""What one tensor-parallel rank runs for the row-parallel projections of an act-order Llama-3-8B layer (4-bit g128),
before and after its act-order shards held whole groups (`fusegraph/distributed/act_order_shards.py`).

`python benchmarks/gpu_tp_act_order.py` (one GPU; rank 0 of TP = 2 and 4):

- **index order** (the split before): rank r takes rows [r·K/n, (r+1)·K/n); every group has rows on every rank, so
  the shard duplicates their scales and declares a smaller group size (64 at TP=2), which `gptq-repack` refuses:
  the shard runs `fg.qmatmul.gptq`'s Triton GEMM, reading the scales through g_idx;
- **whole groups** (now): `down_proj` (14336x4096) takes the channels `argsort(g_idx)[r·K/n, (r+1)·K/n)`, a plain
  g128 shard on the CUDA kernels; `o_proj` (4096x4096), whose channels are the rank's heads, is held whole and run on
  the gathered heads (the act-order CUDA path of one GPU; the `fg.allgather` that replaces its `fg.allreduce` is not
  timed here: one GPU).

First each shard is compiled alone with `fusegraph.compile` on CUDA (which op the pipeline leaves: the check that the
table times what the runtime runs) and checked against `x @ W[rows]` from the checkpoint's integers; then the
CUDA-graph device time of the kernel each runs (weights rotated past the L2), and cuBLAS fp16 on the rank's share of
the dense rows (the ideal split), with the share of the measured copy bandwidth that the rank's int4 bytes take.
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

from fusegraph.distributed.act_order_shards import mlp_channels, o_proj_gathered  # noqa: E402
from fusegraph.distributed.shards import DictSource, row_group_size, shard_state  # noqa: E402
from fusegraph.nn.quant import QuantizationConfig  # noqa: E402
from fusegraph.nn.sharding import ShardingStrategy  # noqa: E402
from fusegraph.ops.gptq_layout import repack  # noqa: E402
from fusegraph.runtime.kernels.gptq_matmul import gptq_matmul_triton  # noqa: E402
from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul  # noqa: E402

N_OUT, GROUP, MS = 4096, 128, (1, 16, 64)
CFG = QuantizationConfig(bits=4, group_size=GROUP, desc_act=True, sym=False)
PROJECTIONS = (("down_proj", "mlp.down_proj", 14336), ("o_proj", "self_attn.o_proj", 4096))


def checkpoint(prefix: str, k_in: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """An act-order projection's AutoGPTQ tensors (v1 zeros; every group exactly 128 rows, scattered) and W [K, N]."""
    gen = torch.Generator().manual_seed(seed)
    groups = k_in // GROUP
    q = torch.randint(0, 16, (k_in, N_OUT), generator=gen, dtype=torch.int32)
    z = torch.randint(1, 16, (groups, N_OUT), generator=gen, dtype=torch.int32)
    scales = (torch.rand(groups, N_OUT, generator=gen) * 0.004 + 0.001).half()
    g_idx = (torch.arange(k_in) // GROUP)[torch.randperm(k_in, generator=gen)]
    w = (q - z[g_idx]).float() * scales[g_idx].float()
    t = {"qweight": GB.pack_rows(q, 4), "qzeros": GB.pack_rows((z - 1).t().contiguous(), 4).t().contiguous(),
         "scales": scales, "g_idx": g_idx.to(torch.int32)}  # fmt: skip
    return {f"{prefix}.{k}": v for k, v in t.items()}, w


def shard(full: dict[str, torch.Tensor], prefix: str, k_in: int, tp: int, whole: bool) -> dict[str, Any]:
    """Rank 0's shard of `prefix`, the GPTQ settings it declares, and the checkpoint rows it holds (in its order)."""
    layout = ShardingStrategy.tensor_parallel(tp).layout(
        n_heads=32, n_kv_heads=8, head_dim=128, intermediate_size=14336
    )
    src, rows = DictSource(full), range(0, k_in // tp)
    part = shard_state(src, layout, 0, CFG, list(full), whole_groups=whole)
    t = {k.rpartition(".")[2]: v for k, v in part.items()}
    if not whole:
        size = row_group_size(src, prefix, rows, CFG)
        return {"t": t, "rows": torch.arange(rows.start, rows.stop), "group_size": size, "desc_act": True}
    if prefix.endswith("o_proj"):
        assert o_proj_gathered(src, prefix, layout, CFG)
        return {"t": t, "rows": torch.arange(k_in), "group_size": GROUP, "desc_act": True}
    channels = mlp_channels(src, "mlp", layout, 0, CFG)
    assert channels is not None
    return {"t": t, "rows": channels, "group_size": GROUP, "desc_act": False}


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
    """Rank 0's shard of one projection on the GPU, both ways, in rotated copies."""

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

    def whole_groups(self, x: torch.Tensor, i: int) -> torch.Tensor:
        r = self.new[i % self.copies]
        return gptq_tiled_matmul(x, r["qweight"], self.new_scales[i % self.copies], r["qzeros"], r.get("perm"),
                                 bits=4, group_size=GROUP, zero_format="v1")  # fmt: skip

    def cublas(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x @ self.dense[i % self.copies]


def on_gpu(w_full: torch.Tensor, k_rank: int, before: dict[str, Any], after: dict[str, Any]) -> Shards:
    copies = GB.copies_for(GB.quant_bytes(k_rank, N_OUT, 4))
    a = after["t"]
    return Shards(
        copies, before["group_size"],
        [{name: v.cuda() for name, v in before["t"].items()} for _ in range(copies)],
        [repack(a["qweight"].cuda(), a["qzeros"].cuda(), a["g_idx"].cuda() if after["desc_act"] else None, bits=4,
                group_size=GROUP, sym=False, desc_act=after["desc_act"], zero_format="v1") for _ in range(copies)],
        [a["scales"].cuda() for _ in range(copies)],
        [w_full[before["rows"]].half().cuda() for _ in range(copies)],  # the rank's share of the dense rows
    )  # fmt: skip


def main() -> None:
    bw = copy_bandwidth()
    print(
        f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | copy {bw / 1e12:.2f} TB/s",
        flush=True,
    )
    for leaf, prefix, k_in in PROJECTIONS:
        full, w_full = checkpoint(prefix, k_in, 0)
        for tp in (2, 4):
            before, after = shard(full, prefix, k_in, tp, False), shard(full, prefix, k_in, tp, True)
            k_old, k_new = before["rows"].numel(), after["rows"].numel()
            ran = {}
            for name, s, k in (("index", before, k_old), ("whole", after, k_new)):
                x0 = torch.randn(3, k, device="cuda", dtype=torch.float16)
                ran[name] = compiled_op(s, x0, x0.float() @ w_full[s["rows"]].cuda())
            print(f"TP={tp} rank 0 {leaf}: index order K={k_old}, group_size {before['group_size']} "
                  f"({before['t']['scales'].shape[0]} scale rows), runs {ran['index']}; whole groups K={k_new}, "
                  f"group_size {GROUP} ({after['t']['scales'].shape[0]} scale rows), act order "
                  f"{after['desc_act']}, runs {ran['whole']}", flush=True)  # fmt: skip
            sh = on_gpu(w_full, k_old, before, after)
            floor = GB.quant_bytes(k_old, N_OUT, 4) / bw * 1e6
            for m in MS:
                x_old = [torch.randn(m, k_old, device="cuda", dtype=torch.float16) for _ in range(sh.copies)]
                x_new = [torch.randn(m, k_new, device="cuda", dtype=torch.float16) for _ in range(sh.copies)]
                for name, fn, s, xs in (("index order", sh.index_order, before, x_old),
                                        ("whole groups", sh.whole_groups, after, x_new)):  # fmt: skip
                    want = xs[0].float() @ w_full[s["rows"]].cuda()
                    err = float((fn(xs[0], 0).float() - want).norm() / want.norm())
                    assert err < 5e-3, f"{leaf} TP={tp} M={m} {name}: relative error {err:.3g}"
                us = {
                    name: graph_us([functools.partial(fn, xs[i], i) for i in range(sh.copies)])
                    for name, fn, xs in (("index order", sh.index_order, x_old), ("whole groups", sh.whole_groups, x_new),
                                         ("cuBLAS fp16 split", sh.cublas, x_old))
                }  # fmt: skip
                cells = " | ".join(f"{n} {v:7.2f} us ({floor / v:4.0%})" for n, v in us.items())
                print(f"{leaf} TP={tp} M={m:<3} {cells} || index/whole {us['index order'] / us['whole groups']:.2f}x "
                      f"cuBLAS/whole {us['cuBLAS fp16 split'] / us['whole groups']:.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
