"""Tensor parallelism of an act-order GPTQ model on CUDA with one GPU: 2 gloo ranks share GPU 0 (no NCCL, no second GPU
needed), on a small Llama whose random act orders cut every group of o_proj and down_proj between the ranks.

`python benchmarks/gpu_tp_act_order_check.py` (`DEV=cpu DT=float32` for a CPU dry run): each rank loads its shard
(`load_model_shard`: o_proj held whole on the gathered heads, the MLP's channels in down_proj's group order), runs a
ragged prefill, a decode step and 2 greedy steps through the default CUDA pipeline, and prints its logits' distance
to TP=1 on the same device, whether the greedy tokens agree, and which GEMMs and collectives its graph ran (every
GEMM should be `fg.qmatmul.gptq_tiled`: none left on Triton's per-row g_idx kernel). Correctness only: two ranks on
one GPU time nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV, DT = os.environ.get("DEV", "cuda:0"), os.environ.get("DT", "float16")
DIMS: dict[str, Any] = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, head_dim=64
)  # per rank: o_proj K 128 (cut: held whole, 256), down_proj K 256 (2 groups of 128)


def run_model(model: Any, steps: list[list[list[int]]]) -> dict[str, Any]:
    """`_tiny.run_model` on DEV with 2 greedy steps: every step's logits (f32, CPU), the greedy tokens, and the GEMMs
    and collectives of the graph that ran."""
    from tests.distributed import _tiny

    out = _tiny.run_model(model, steps, 2, device=DEV)
    graph = out["graph"]
    ops = {name: graph.count(name + " ") for name in ("fg.qmatmul.gptq_tiled", "fg.qmatmul.gptq", "fg.allgather",
                                                       "fg.allreduce")}  # fmt: skip
    ops["gptq_tiled with perm"] = sum(
        1 for line in graph.splitlines() if "gptq_tiled" in line and " perm %" in line
    )
    return {"logits": [t.float().cpu() for t in out["logits"]], "generated": out["generated"], "ops": ops}


def rank_main(info: Any, folder: str, steps: list[list[list[int]]]) -> dict[str, Any]:
    from fusegraph.distributed.model import load_model_shard

    model = load_model_shard(folder, rank=info.rank, world_size=info.world_size, device=DEV, dtype=DT)
    return run_model(model, steps)


def main() -> None:
    from fusegraph.distributed import launch
    from fusegraph.nn import QuantizationConfig, load_model
    from tests.distributed import _tiny

    quant = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False)
    with tempfile.TemporaryDirectory() as d:
        folder = _tiny.write_model(Path(d), quant=quant, seed=4, cut_groups=True, **DIMS)
        steps = _tiny.tokens()
        ranks = launch(rank_main, 2, str(folder), steps, backend="gloo", start_method="spawn")
        one = run_model(load_model(folder, device=DEV, dtype=DT), steps)
    scale = max(float(b.abs().max()) for b in one["logits"])
    print(f"device {DEV} {DT}; TP=1 graph: {one['ops']}", flush=True)
    for r, got in enumerate(ranks):
        diff = max(float((a - b).abs().max()) for a, b in zip(got["logits"], one["logits"], strict=True))
        print(f"rank {r}: TP=2 vs TP=1 max |diff| {diff:.3g} at logit scale {scale:.3g}; greedy tokens equal: "
              f"{got['generated'] == one['generated']}; graph: {got['ops']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
