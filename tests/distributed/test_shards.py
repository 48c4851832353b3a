"""Each rank's GPTQ/dense slice dequantizes to the matching slice of the full weight,
and every uneven split gets its named error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fusegraph.distributed.shards import DictSource, SafetensorsSource, row_group_size, shard_state
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.sharding import (
    GroupSplitError,
    HeadsNotDivisibleError,
    ShardingError,
    ShardingStrategy,
    WorldSizeMismatchError,
)
from fusegraph.ops.gptq_packing import dequantize, pack


def _layout(world: int = 2, **kw: int):  # type: ignore[no-untyped-def]
    args = {"n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 64} | kw
    return ShardingStrategy.tensor_parallel(world).layout(**args)


def _blockwise_perm(k: int, world: int, seed: int) -> torch.Tensor:
    """An act-order that keeps each rank's K rows together (random inside each block)."""
    gen, per = torch.Generator().manual_seed(seed), k // world
    return torch.cat([torch.randperm(per, generator=gen) + r * per for r in range(world)])


def _gptq(prefix: str, n: int, k: int, cfg: QuantizationConfig, perm: torch.Tensor | None, seed: int) -> dict:
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    t = pack(w, bits=cfg.bits, group_size=cfg.group_size, sym=cfg.sym, desc_act=cfg.desc_act, perm=perm)
    return {f"{prefix}.{name}": v for name, v in t.items()}


def _dense(t: dict, prefix: str, cfg: QuantizationConfig) -> torch.Tensor:
    """W [K, N] from a projection's GPTQ tensors."""
    g = t.get(f"{prefix}.g_idx") if cfg.desc_act else None
    return dequantize(
        t[f"{prefix}.qweight"], t[f"{prefix}.scales"], t[f"{prefix}.qzeros"], g,
        bits=cfg.bits, group_size=cfg.group_size, sym=cfg.sym,
    )  # fmt: skip


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_shard_state__gptq_column_and_row_slices_dequantize_to_the_full_slices(bits: int) -> None:
    cfg = QuantizationConfig(bits=bits, group_size=32, desc_act=True, sym=False)
    hidden, inter = 64, 128
    full = {
        **_gptq("mlp.gate_proj", inter, hidden, cfg, None, 1),  # column: any act-order is fine
        **_gptq("mlp.down_proj", hidden, inter, cfg, _blockwise_perm(inter, 2, 2), 2),
    }
    layout = _layout(intermediate_size=inter)
    for rank in range(2):
        part = shard_state(DictSource(full), layout, rank, cfg)
        cols = slice(rank * 64, (rank + 1) * 64)
        assert torch.equal(_dense(part, "mlp.gate_proj", cfg), _dense(full, "mlp.gate_proj", cfg)[:, cols])
        assert torch.equal(_dense(part, "mlp.down_proj", cfg), _dense(full, "mlp.down_proj", cfg)[cols, :])
        assert part["mlp.down_proj.scales"].shape == (2, hidden)  # 64 rows / group_size 32


def test_shard_state__heads_and_gqa_replication() -> None:
    full = {
        f"attn.{p}.weight": torch.randn(n, 64) for p, n in (("q_proj", 64), ("k_proj", 16), ("v_proj", 16))
    }
    full["attn.o_proj.weight"] = torch.randn(64, 64)
    full["norm.weight"] = torch.randn(64)
    layout = _layout(world=2, n_kv_heads=1)  # 4 q heads, 1 kv head replicated on both ranks
    for rank in range(2):
        part = shard_state(DictSource(full), layout, rank)
        assert torch.equal(
            part["attn.q_proj.weight"], full["attn.q_proj.weight"][rank * 32 : (rank + 1) * 32]
        )
        assert torch.equal(part["attn.k_proj.weight"], full["attn.k_proj.weight"])  # the one kv head
        assert torch.equal(
            part["attn.o_proj.weight"], full["attn.o_proj.weight"][:, rank * 32 : (rank + 1) * 32]
        )
        assert torch.equal(part["norm.weight"], full["norm.weight"])
    assert layout.rank(1).kv_heads == range(0, 1) and layout.kv_replicas == 2


def test_safetensors_source__reads_only_the_rank_slices(tmp_path: Path) -> None:
    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=False, sym=True)
    full = _gptq("mlp.down_proj", 64, 128, cfg, None, 3) | _gptq("mlp.up_proj", 128, 64, cfg, None, 4)
    save_file(full, str(tmp_path / "model.safetensors"))
    source = SafetensorsSource.from_folder(tmp_path)
    part = shard_state(source, _layout(intermediate_size=128), 1, cfg)
    ref = shard_state(DictSource(full), _layout(intermediate_size=128), 1, cfg)
    assert part.keys() == ref.keys() and all(torch.equal(part[k], ref[k]) for k in ref)
    total = sum(t.numel() * t.element_size() for t in full.values())
    assert source.bytes_read < 0.6 * total  # about half, plus the whole g_idx of up_proj


def test_shard_state__row_split_cutting_a_group_is_refused() -> None:
    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=False, sym=True)
    full = _gptq("mlp.down_proj", 64, 96, cfg, None, 5)  # 48 rows per rank: group 1 is cut
    with pytest.raises(
        GroupSplitError, match=r"mlp.down_proj: the row split \[0, 48\) of K=96 cuts GPTQ group 1"
    ):
        shard_state(DictSource(full), _layout(intermediate_size=96), 0, cfg)


def test_shard_state__act_order_groups_shared_by_ranks_are_duplicated() -> None:
    cfg = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))  # groups span both halves
    full = _gptq("self_attn.o_proj", 64, 64, cfg, perm, 6)
    layout = _layout()
    for rank in range(2):
        rows = range(rank * 32, (rank + 1) * 32)
        size = row_group_size(DictSource(full), "self_attn.o_proj", rows, cfg)
        part = shard_state(DictSource(full), layout, rank, cfg)
        local = QuantizationConfig(bits=4, group_size=size, desc_act=True, sym=False)
        assert size < 16 and part["self_attn.o_proj.scales"].shape == (32 // size, 64)
        assert torch.equal(
            _dense(part, "self_attn.o_proj", local),
            _dense(full, "self_attn.o_proj", cfg)[32 * rank : 32 * (rank + 1)],
        )


def test_layout__named_errors() -> None:
    with pytest.raises(
        HeadsNotDivisibleError, match=r"num_attention_heads \(6\) must be divisible by the world size \(4\)"
    ):
        _layout(world=4, n_heads=6)
    with pytest.raises(HeadsNotDivisibleError, match=r"num_key_value_heads \(3\)"):
        _layout(world=2, n_heads=6, n_kv_heads=3)
    with pytest.raises(ShardingError, match=r"intermediate_size \(101\)"):
        _layout(intermediate_size=101)
    with pytest.raises(WorldSizeMismatchError, match=r"world_size \(2\) != number of devices \(3"):
        ShardingStrategy.tensor_parallel(2, devices=["cpu", "cpu", "cpu"])
    with pytest.raises(WorldSizeMismatchError, match="has 4 ranks"):
        ShardingStrategy.tensor_parallel(2).check_world_size(4)
    assert ShardingStrategy.from_devices(["cuda:0", "cuda:1"]).world_size == 2
