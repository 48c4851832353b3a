"""Rank functions for the multi-process tests (module level, so spawn can pickle them)."""

from __future__ import annotations

from typing import Any

import torch

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.distributed import CollectiveError, RankInfo
from fusegraph.runtime import compile as fg_compile
from fusegraph.runtime.eager import CompiledGraph


def _x(rank: int) -> torch.Tensor:
    return torch.arange(12, dtype=torch.float32).reshape(3, 4) * (rank + 1) + 0.25 * rank


def collectives(info: RankInfo) -> dict[str, Any]:
    """Run allreduce and allgather (axes 0 and 1) in one graph; and a graph built for the
    wrong world size."""
    n = info.world_size
    with Graph("tp", input_types=[TensorType(DType.float32, ["rows", 4], DeviceRef.CPU())]) as g:
        (x,) = g.inputs
        g.output(
            ops.allreduce(x, world_size=n),
            ops.allreduce(x, world_size=n),  # a second, identical exchange
            ops.allgather(x, axis=1, world_size=n),
            ops.allgather(x, axis=0, world_size=n),
        )
    outs = fg_compile(g, device="cpu")(_x(info.rank))
    with Graph("wrong", input_types=[TensorType(DType.float32, [3, 4], DeviceRef.CPU())]) as bad:
        bad.output(ops.allreduce(bad.inputs[0], world_size=n + 2))
    try:
        fg_compile(bad, device="cpu")(_x(info.rank))
        error = ""
    except CollectiveError as err:
        error = str(err)
    return {"outs": [o.clone() for o in outs], "error": error}


def tp_model(info: RankInfo, folders: list[str], steps: list, new_tokens: int) -> list[dict[str, Any]]:
    """Each model directory's logits, generated ids and cache on this rank."""
    from fusegraph.distributed.model import load_model_shard
    from tests.distributed._tiny import run_model

    out = []
    for folder in folders:
        model = load_model_shard(folder, rank=info.rank, world_size=info.world_size)
        out.append(run_model(model, steps, new_tokens))
    return out


def tp_fold(info: RankInfo, folder: str, steps: list, pipelines: list[str]) -> list[dict[str, Any]]:
    """This rank's shard run through each pipeline: every step's logits, the KV blocks, the pass counters and the
    graph that ran."""
    from fusegraph.distributed.model import load_model_shard
    from tests.models.runner import NUM_BLOCKS, run_steps

    out = []
    for pipeline in pipelines:
        model = load_model_shard(folder, rank=info.rank, world_size=info.world_size)
        manager = model.kv_manager(NUM_BLOCKS)
        run = model.compile(NUM_BLOCKS, pipeline=pipeline)
        assert isinstance(run, CompiledGraph)  # eager on the CPU
        logits = run_steps(run, manager, steps)
        stats = run.pass_stats
        ran = [] if stats is None else [r.name for r in stats.records]
        counters = {name: dict(stats[name].counters) for name in ("gptq-repack", "fold-act-order-permutation")
                    if stats is not None and name in ran}  # fmt: skip
        out.append(
            {"logits": logits, "kv": manager.kv_blocks.clone(), "counters": counters, "graph": str(run.graph)}
        )
    return out
