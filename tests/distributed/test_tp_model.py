"""Tensor parallelism end to end on CPU: 2 gloo ranks run a tiny GPTQ act-order Llama and
match TP=1 (logits within 1e-5, the same greedy tokens), each rank's KV cache holding exactly
its kv heads; and the named errors for models that do not split."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from fusegraph.distributed import launch
from fusegraph.distributed.model import GatheredGPTQLinear, load_model_shard
from fusegraph.nn import QuantizationConfig, load_model
from fusegraph.nn.linear import GPTQLinear
from fusegraph.nn.sharding import GroupSplitError, HeadsNotDivisibleError, WorldSizeMismatchError
from tests.distributed import _tiny, _workers

NEW_TOKENS = 3
# (name, write_model kwargs): GQA with an untied (column-parallel, gathered) lm_head and
# act orders that keep each rank's o_proj/down_proj groups whole; and one kv head replicated
# on both ranks, a tied (replicated) lm_head, and random act orders whose groups the row split
# would cut (o_proj gathered, the MLP channels dealt out in down_proj's group order).
MODELS: list[tuple[str, dict[str, Any]]] = [
    ("gqa_untied", {"n_kv_heads": 2}),
    ("mqa_tied_shared_groups", {"n_kv_heads": 1, "tied": True, "cut_groups": True}),
]


def _close(got: torch.Tensor, want: torch.Tensor, where: str) -> None:
    try:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    except AssertionError as err:
        raise AssertionError(f"{where}: {err}") from None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tp")
    folders = [str(_tiny.write_model(root / name, **kw)) for name, kw in MODELS]
    steps = _tiny.tokens()
    tp1 = [_tiny.run_model(load_model(f), steps, NEW_TOKENS) for f in folders]
    tp2 = launch(_workers.tp_model, 2, folders, steps, NEW_TOKENS, backend="gloo", start_method="fork")
    return {"tp1": tp1, "tp2": tp2}


@pytest.mark.parametrize("model", range(len(MODELS)), ids=[m[0] for m in MODELS])
def test_tp2__logits_and_greedy_tokens_equal_tp1(runs: dict[str, Any], model: int) -> None:
    ref = runs["tp1"][model]
    for rank in range(2):
        got = runs["tp2"][rank][model]
        assert len(got["logits"]) == len(ref["logits"]) == len(_tiny.STEPS) + NEW_TOKENS
        for step, (a, b) in enumerate(zip(got["logits"], ref["logits"], strict=True)):
            _close(a, b, f"rank {rank} step {step}")
        assert got["generated"] == ref["generated"]


@pytest.mark.parametrize("model", range(len(MODELS)), ids=[m[0] for m in MODELS])
def test_tp2__each_rank_cache_holds_exactly_its_kv_heads(runs: dict[str, Any], model: int) -> None:
    n_kv = MODELS[model][1]["n_kv_heads"]
    ref = runs["tp1"][model]
    for rank in range(2):
        got = runs["tp2"][rank][model]
        heads = [rank] if n_kv == 2 else [0]  # 2 kv heads: one each; 1 kv head: replicated
        assert got["blocks_shape"][4] == len(heads)  # [blocks, 2, layers, page, n_kv_heads, D]
        for seq, (mine, full) in enumerate(zip(got["caches"], ref["caches"], strict=True)):
            for layer, ((k, v), (k1, v1)) in enumerate(zip(mine, full, strict=True)):
                where = f"rank {rank} seq {seq} layer {layer}"
                _close(k, k1[:, heads], f"{where} k")
                _close(v, v1[:, heads], f"{where} v")


def test_heads_not_divisible_by_the_world_size__named_error(tmp_path: Path) -> None:
    folder = _tiny.write_model(tmp_path / "m")
    with pytest.raises(
        HeadsNotDivisibleError, match=r"num_attention_heads \(4\) must be divisible by the world size \(3\)"
    ):
        load_model_shard(folder, rank=0, world_size=3)


def test_row_split_cutting_a_group_without_act_order__named_error(tmp_path: Path) -> None:
    quant = QuantizationConfig(bits=4, group_size=64, desc_act=False, sym=True)
    folder = _tiny.write_model(tmp_path / "m", quant=quant)  # o_proj: K=64, 32 rows per rank
    with pytest.raises(
        GroupSplitError, match="o_proj's rows split into shards of 32, which cuts GPTQ groups"
    ):
        load_model_shard(folder, rank=0, world_size=2)


def test_act_order_groups_cut_by_the_split__each_rank_still_holds_whole_groups(tmp_path: Path) -> None:
    folder = _tiny.write_model(tmp_path / "m", cut_groups=True)
    model = load_model_shard(folder, rank=1, world_size=2)
    # o_proj's groups are cut by the heads' split: the rank holds the whole o_proj (all 4 heads of 16) and runs it
    # on the heads gathered from both ranks, with the checkpoint's groups, instead of an all-reduce after it
    o_proj = model.model.layers[0].self_attn.o_proj
    assert isinstance(o_proj, GatheredGPTQLinear) and o_proj.in_dim == 64
    assert o_proj.quant_config == _tiny.QUANT
    assert (
        model.state_dict()["model.layers.0.self_attn.o_proj.scales"].shape[0] == 64 // _tiny.QUANT.group_size
    )
    # down_proj's groups are cut by the index order too, but its channels go to the ranks in group order:
    # whole groups, a plain shard of the checkpoint's group size, its own 64 / 16 groups' scales
    down = cast(GPTQLinear, model.model.layers[0].mlp.down_proj)
    assert down.quant_config == dataclasses.replace(_tiny.QUANT, desc_act=False)
    assert model.state_dict()["model.layers.0.mlp.down_proj.scales"].shape[0] == 64 // _tiny.QUANT.group_size
    text = str(model.build_graph(num_blocks=4))
    layers = _tiny.DIMS[
        "num_hidden_layers"
    ]  # per layer: o_proj's gather, the MLP's reduce; then the logits' gather
    assert text.count("fg.allgather") == layers + 1 and text.count("fg.allreduce") == layers, text


def test_world_size_not_matching_the_devices__named_error(tmp_path: Path) -> None:
    folder = _tiny.write_model(tmp_path / "m")
    with pytest.raises(
        WorldSizeMismatchError, match=r"world_size \(2\) != number of devices \(1: \['cpu'\]\)"
    ):
        load_model_shard(folder, rank=0, world_size=2, devices=["cpu"])
    with pytest.raises(WorldSizeMismatchError, match=r"world_size \(2\) != number of devices \(3"):
        launch(_workers.collectives, 2, devices=["cpu", "cpu", "cpu"], backend="gloo")
