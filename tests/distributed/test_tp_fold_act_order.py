"""`fold-act-order-permutation` on tensor-parallel shards (2 gloo ranks, CPU): a tiny act-order GPTQ Llama whose
per-rank shapes fit the tiled layout (`_tiny.write_model`: each rank's o_proj and down_proj groups whole), each rank's shard run through the CUDA pipeline's passes with the fold and
without it: the same logits at every step and the same KV blocks on each rank, and with the fold no matmul permutes
x (o_proj's row-parallel input comes permuted from the rank's attention; down_proj's shard has no act order left:
`distributed/act_order_shards.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fusegraph.distributed import launch
from fusegraph.nn import QuantizationConfig
from tests.distributed import _tiny, _workers
from tests.models.runner import random_steps

REPACK = "fuse-qkv-projections,fuse-rope-split-store,canonicalize,cse,gptq-repack"
FOLDED, UNFOLDED = f"{REPACK},fold-act-order-permutation,dce", f"{REPACK},dce"
LAYERS = 2
# per rank: 2 query heads x 64 = o_proj's K of 128, gate_up's N of 512, down's K of 256 (the tiled layout's multiples)
DIMS: dict[str, Any] = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=LAYERS, num_attention_heads=4, head_dim=64
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("tp_fold")
    quant = QuantizationConfig(bits=4, group_size=128, desc_act=True, sym=False)
    # row-parallel act orders that keep each rank's groups whole (a cut group leaves a shard group size the tiled
    # layout does not take: no repack, nothing to fold)
    _tiny.write_model(Path(folder), quant=quant, seed=4, **DIMS)
    steps = random_steps(_tiny.DIMS["vocab_size"])
    result: list[list[dict[str, Any]]] = launch(
        _workers.tp_fold, 2, str(folder), steps, [FOLDED, UNFOLDED], backend="gloo", start_method="fork"
    )
    return result


@pytest.mark.parametrize("rank", [0, 1])
def test_tp_fold_act_order__each_shard_equals_unfolded_on_logits_and_cache(ranks: list, rank: int) -> None:
    folded, unfolded = ranks[rank]
    for i, (got, want) in enumerate(zip(folded["logits"], unfolded["logits"], strict=True)):
        torch.testing.assert_close(
            got, want, atol=2e-5, rtol=2e-5, msg=lambda m: f"rank {rank} step {i}: {m}"
        )
    torch.testing.assert_close(folded["kv"], unfolded["kv"], atol=2e-5, rtol=2e-5)
    assert folded["kv"].abs().sum() > 0
    assert folded["counters"]["gptq-repack"]["repacked"] > 0
    fold = folded["counters"]["fold-act-order-permutation"]
    # down_proj's shards are plain (the MLP channels are dealt out in its group order): no MLP fold is left to do
    assert fold["attention"] == LAYERS and fold["mlp"] == 0 and fold["skipped"] == 0, fold
    ran = folded["graph"].splitlines()
    assert not [line for line in ran if "fg.qmatmul.gptq_tiled" in line and " perm %" in line]
    assert len([line for line in ran if "fg.attention.paged" in line and " perm %" in line]) == LAYERS
