"""Each rank's GPTQ/dense slice dequantizes to the matching slice of the full weight,
and every uneven split gets its named error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fusegraph.distributed.act_order_shards import (
    WholeGroupDecisions,
    mlp_channels,
    o_proj_gathered,
    pick_packed_rows,
)
from fusegraph.distributed.shards import DictSource, SafetensorsSource, row_group_size, shard_state
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.sharding import (
    GroupSplitError,
    HeadsNotDivisibleError,
    ShardingError,
    ShardingStrategy,
    WorldSizeMismatchError,
)
from fusegraph.ops.gptq_packing import dequantize, pack, pack_rows


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
    hidden = 64
    # an act order that keeps each rank's o_proj groups whole
    full = _gptq("self_attn.o_proj", hidden, 64, cfg, _blockwise_perm(64, 2, 2), 2)
    for rank in range(2):
        part = shard_state(DictSource(full), _layout(), rank, cfg)
        rows = slice(rank * 32, (rank + 1) * 32)
        want = _dense(full, "self_attn.o_proj", cfg)[rows, :]
        assert torch.equal(_dense(part, "self_attn.o_proj", cfg), want)
        assert part["self_attn.o_proj.scales"].shape == (1, hidden)  # 32 rows / group_size 32


def _column_of(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """For each column of `part`, the index of the equal column of `whole` (each must have exactly one)."""
    same = (part.t()[:, None, :] == whole.t()[None, :, :]).all(-1)
    assert (same.sum(1) == 1).all(), "a shard column equals no column, or several, of the full weight"
    return same.int().argmax(1)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_shard_state__act_order_shards_channels_go_by_down_proj_groups(bits: int) -> None:
    # down_proj's act order spreads every group over both halves of its rows; the ranks still get whole groups:
    # the gate/up columns and the down rows of the same channels, down's shard plain (g_idx = arange // 32)
    cfg = QuantizationConfig(bits=bits, group_size=32, desc_act=True, sym=False)
    plain = QuantizationConfig(bits=bits, group_size=32, desc_act=False, sym=False)
    hidden, inter = 64, 128
    gen = torch.Generator().manual_seed(3)
    full = {
        **_gptq("mlp.gate_proj", inter, hidden, cfg, torch.randperm(hidden, generator=gen), 1),
        **_gptq("mlp.up_proj", inter, hidden, cfg, torch.randperm(hidden, generator=gen), 2),
        **_gptq("mlp.down_proj", hidden, inter, cfg, torch.randperm(inter, generator=gen), 3),
    }
    down_groups = full["mlp.down_proj.g_idx"].long()
    # each half of the rows holds rows of all 4 groups: a contiguous split would cut every group
    assert all(len(set(down_groups[h * 64 : (h + 1) * 64].tolist())) == 4 for h in range(2))
    gate, up, down = (_dense(full, f"mlp.{p}", cfg) for p in ("gate_proj", "up_proj", "down_proj"))
    h = torch.randn(3, inter, generator=gen)
    summed, seen = torch.zeros(3, hidden), []
    for rank in range(2):
        part = shard_state(DictSource(full), _layout(intermediate_size=inter), rank, cfg)
        channels = _column_of(_dense(part, "mlp.gate_proj", cfg), gate)
        assert torch.equal(_dense(part, "mlp.up_proj", cfg), up[:, channels])
        assert torch.equal(part["mlp.down_proj.g_idx"].long(), torch.arange(64) // 32)
        assert part["mlp.down_proj.scales"].shape == (2, hidden)  # its own two groups, none duplicated
        assert torch.equal(_dense(part, "mlp.down_proj", plain), down[channels, :])
        assert set(down_groups[channels].tolist()) == {2 * rank, 2 * rank + 1}
        summed += h[:, channels] @ _dense(part, "mlp.down_proj", plain)
        seen += channels.tolist()
    assert sorted(seen) == list(range(inter))
    torch.testing.assert_close(summed, h @ down)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pick_packed_rows__equals_packing_the_picked_rows_chunk_by_chunk(bits: int) -> None:
    gen = torch.Generator().manual_seed(bits)
    q = torch.randint(0, 2**bits, (128, 70), generator=gen)
    rows = torch.randperm(128, generator=gen)[:64]
    got = pick_packed_rows(pack_rows(q, bits), rows, bits, chunk=32)  # three chunks, the last of 6 columns
    assert torch.equal(got, pack_rows(q[rows], bits))


def test_shard_state__act_order_stacked_gate_up_takes_the_same_channels_of_gate_and_up() -> None:
    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    gen = torch.Generator().manual_seed(6)
    # gate and up share their input's act order, as GPTQ gives them
    attn_order = torch.randperm(64, generator=gen)
    apart = {
        **_gptq("mlp.gate_proj", 128, 64, cfg, attn_order, 1),
        **_gptq("mlp.up_proj", 128, 64, cfg, attn_order, 2),
        **_gptq("mlp.down_proj", 64, 128, cfg, torch.randperm(128, generator=gen), 3),
    }
    stacked = {
        f"mlp.down_proj.{p}": apart[f"mlp.down_proj.{p}"] for p in ("qweight", "qzeros", "scales", "g_idx")
    }
    for p in ("qweight", "qzeros", "scales"):
        stacked[f"mlp.gate_up_proj.{p}"] = torch.cat(
            [apart[f"mlp.gate_proj.{p}"], apart[f"mlp.up_proj.{p}"]], 1
        )
    stacked["mlp.gate_up_proj.g_idx"] = apart["mlp.gate_proj.g_idx"]
    layout = _layout(intermediate_size=128)
    for rank in range(2):
        one, two = (
            shard_state(DictSource(stacked), layout, rank, cfg),
            shard_state(DictSource(apart), layout, rank, cfg),
        )
        want = torch.cat([_dense(two, "mlp.gate_proj", cfg), _dense(two, "mlp.up_proj", cfg)], 1)
        assert torch.equal(_dense(one, "mlp.gate_up_proj", cfg), want)
        assert torch.equal(one["mlp.down_proj.qweight"], two["mlp.down_proj.qweight"])


def test_shard_state__act_order_groups_of_other_sizes_keep_the_contiguous_split() -> None:
    # groups of 40 and 24 rows (a valid g_idx, not GPTQ's whole groups): no rank can hold whole groups of 32
    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    full = _gptq("mlp.down_proj", 64, 128, cfg, None, 4)
    g_idx = torch.tensor([0] * 40 + [1] * 24 + [2] * 32 + [3] * 32, dtype=torch.int32)
    full["mlp.down_proj.g_idx"] = g_idx[torch.randperm(128, generator=torch.Generator().manual_seed(5))]
    layout = _layout(intermediate_size=128)
    assert mlp_channels(DictSource(full), "mlp", layout, 0, cfg) is None
    short = full | {"mlp.down_proj.g_idx": torch.arange(96, dtype=torch.int32) // 32}  # malformed: K is 128
    assert mlp_channels(DictSource(short), "mlp", layout, 0, cfg) is None
    part = shard_state(DictSource(full), layout, 0, cfg)
    size = row_group_size(DictSource(full), "mlp.down_proj", range(64), cfg)
    local = QuantizationConfig(bits=4, group_size=size, desc_act=True, sym=False)
    assert size < 32
    assert torch.equal(_dense(part, "mlp.down_proj", local), _dense(full, "mlp.down_proj", cfg)[:64])


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


def test_shard_state__act_order_o_proj_whose_groups_the_heads_cut_is_read_whole() -> None:
    cfg = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))  # groups span both halves
    cut = _gptq("self_attn.o_proj", 64, 64, cfg, perm, 6)
    whole = _gptq("self_attn.o_proj", 64, 64, cfg, _blockwise_perm(64, 2, 8), 6)
    layout = _layout()
    assert o_proj_gathered(DictSource(cut), "self_attn.o_proj", layout, cfg)
    assert not o_proj_gathered(DictSource(whole), "self_attn.o_proj", layout, cfg)
    assert not o_proj_gathered(DictSource(cut), "self_attn.o_proj", _layout(world=1), cfg)
    for rank in range(2):
        part = shard_state(DictSource(cut), layout, rank, cfg)
        assert part.keys() == cut.keys() and all(torch.equal(part[k], cut[k]) for k in cut)
        assert part["self_attn.o_proj.qweight"].shape == (8, 64)  # all 64 rows, 8 to an int32 word
        row_split = shard_state(DictSource(whole), layout, rank, cfg)
        assert row_split["self_attn.o_proj.qweight"].shape == (4, 64)


def test_shard_state__act_order_groups_shared_by_ranks_are_duplicated() -> None:
    # the index-order split (`whole_groups=False`; also what a down_proj whose groups are not all group_size rows gets)
    cfg = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))  # groups span both halves
    full = _gptq("self_attn.o_proj", 64, 64, cfg, perm, 6)
    layout = _layout()
    for rank in range(2):
        rows = range(rank * 32, (rank + 1) * 32)
        size = row_group_size(DictSource(full), "self_attn.o_proj", rows, cfg)
        part = shard_state(DictSource(full), layout, rank, cfg, whole_groups=False)
        local = QuantizationConfig(bits=4, group_size=size, desc_act=True, sym=False)
        assert size < 16 and part["self_attn.o_proj.scales"].shape == (32 // size, 64)
        assert torch.equal(
            _dense(part, "self_attn.o_proj", local),
            _dense(full, "self_attn.o_proj", cfg)[32 * rank : 32 * (rank + 1)],
        )


class _CountingSource(DictSource):
    """A DictSource that counts the reads of each tensor."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.reads: dict[str, int] = {}

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int = 0) -> torch.Tensor:
        self.reads[name] = self.reads.get(name, 0) + 1
        return super().read(name, dim, start, stop)


def test_shard_state__reuses_the_act_order_decisions_made_for_the_model() -> None:
    # the model's shapes (act_order_plan) and its tensors (shard_state) read the same decisions: each g_idx is read for
    # them once, and the shards equal those of a shard_state that decides alone
    cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    gen = torch.Generator().manual_seed(11)
    full = {
        **_gptq("mlp.gate_proj", 128, 64, cfg, torch.randperm(64, generator=gen), 1),
        **_gptq("mlp.up_proj", 128, 64, cfg, torch.randperm(64, generator=gen), 2),
        **_gptq("mlp.down_proj", 64, 128, cfg, torch.randperm(128, generator=gen), 3),
        **_gptq("self_attn.o_proj", 64, 64, cfg, torch.randperm(64, generator=gen), 4),
    }
    layout = _layout()
    for rank in range(2):
        source = _CountingSource(full)
        decided = WholeGroupDecisions(source, layout, rank, cfg)
        assert decided.o_proj("self_attn.o_proj") and decided.mlp("mlp") is not None  # as act_order_plan asks
        assert source.reads == {"self_attn.o_proj.g_idx": 1, "mlp.down_proj.g_idx": 1}
        part = shard_state(source, layout, rank, cfg, decisions=decided)
        # again only to copy them: o_proj's whole, and down's picked rows' groups
        assert source.reads["self_attn.o_proj.g_idx"] == 2 and source.reads["mlp.down_proj.g_idx"] == 2
        alone = shard_state(DictSource(full), layout, rank, cfg)
        assert part.keys() == alone.keys() and all(torch.equal(part[k], alone[k]) for k in part)
    with pytest.raises(ShardingError, match="for rank 1 was given act-order decisions made for rank 0$"):
        shard_state(source, layout, 1, cfg, decisions=WholeGroupDecisions(source, layout, 0, cfg))
    with pytest.raises(ShardingError, match="made for another source, another layout$"):
        shard_state(
            DictSource(full), layout, 0, cfg, decisions=WholeGroupDecisions(source, _layout(4), 0, cfg)
        )
    plain = QuantizationConfig(bits=4, group_size=32, desc_act=False, sym=False)
    with pytest.raises(ShardingError, match="made for rank 1, another quant_config$"):
        shard_state(source, layout, 0, cfg, decisions=WholeGroupDecisions(source, layout, 1, plain))


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
