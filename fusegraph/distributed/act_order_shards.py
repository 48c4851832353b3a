"""Act-order GPTQ shards that hold whole groups: the MLP's channels in `down_proj`'s group order, and `o_proj`
replicated behind an all-gather where the heads' split would cut its groups.

With act order (`desc_act`), a row-parallel projection's rows belong to their GPTQ groups in a scattered order, so
the contiguous split of `shards.py` leaves groups partly on several ranks. Such a shard duplicates the groups'
scales and declares a smaller group size (`shards.row_group_size`) whose groups are not whole: `gptq-repack` refuses
it and `fg.qmatmul.gptq` reads the scales through g_idx row by row (Triton's general kernel: 307 µs for a Llama-3-8B
`down_proj` shard at TP=2, M=1, on an H200, against 7.4 µs for a plain shard; `benchmarks/gpu_tp_act_order.py`).

- **MLP** (`mlp_channels`, `shard_by_channels`): a column-parallel `gate_proj`/`up_proj` can hand a rank any set of
  channels, in any order, and `down_proj` only needs its rows in the same order. So the rank takes the channels
  `argsort(g_idx)[r·I/n : (r+1)·I/n]`: sorted by group, they hold whole groups `[r·G/n, (r+1)·G/n)`, and the shard's
  `g_idx` is `arange(I/n) // group_size`: a plain (`desc_act=False`) GPTQ weight, with no permutation of x left to
  run, holding only its own groups' scales. This needs each group to hold exactly `group_size` rows (GPTQ's act order
  gives that) and `I/n` to be a multiple of `group_size`; otherwise `mlp_channels` returns None and the shard takes
  the contiguous split.
- **o_proj** (`o_proj_gathered`): its input rows are the rank's attention heads, which fix its channels. Where the
  heads' split cuts a group, every rank holds the whole `o_proj` instead and runs it on the heads of all ranks,
  gathered (`fg.allgather` in place of the `fg.allreduce` after it): the act-order GEMM of one GPU, with the
  checkpoint's groups. It reads all of o_proj's bytes on each rank (4 bits: 8 MiB a Llama-3-8B layer).

The decisions read only the checkpoint's full `g_idx`, so every rank makes the same ones (the collectives match).
`WholeGroupDecisions` makes each once a rank and keeps it: the model's shapes (`model.act_order_plan`) and its tensors
(`shards.shard_state`) read the same decisions, and each `g_idx` is read for them once.
Reading: a rank reads these shards' whole tensors (scattered channels, a replicated o_proj), not only its slice as
`SafetensorsSource.read` does for contiguous splits.

Example:
    >>> order = mlp_channels(source, "model.layers.0.mlp", layout, rank=1, cfg=quant)
    >>> part = shard_by_channels(source, "model.layers.0.mlp.down_proj", present, order, layout, 1, quant)
    >>> o_proj_gathered(source, "model.layers.0.self_attn.o_proj", layout, quant)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.sharding import ShardingError, TensorParallelLayout
from fusegraph.ops.gptq_packing import pack_rows, unpack_rows

if TYPE_CHECKING:  # shards.py imports this module
    from fusegraph.distributed.shards import TensorSource

MLP_LEAVES = ("gate_proj", "up_proj", "gate_up_proj", "down_proj")

__all__ = [
    "MLP_LEAVES",
    "WholeGroupDecisions",
    "act_order_splits",
    "mlp_channels",
    "o_proj_gathered",
    "pick_packed_rows",
    "shard_by_channels",
]


@dataclass(eq=False)  # compared by identity: it holds tensors
class WholeGroupDecisions:
    """One rank's act-order decisions over a checkpoint, each made on first use and kept: an MLP's channels in
    down_proj's group order (`mlp_channels`; None: the contiguous split) and whether an `o_proj` is gathered
    (`o_proj_gathered`). Whoever holds it reads the same answers, and each `g_idx` once.

    Example:
        >>> decided = WholeGroupDecisions(source, layout, rank=1, cfg=quant)
        >>> decided.o_proj("model.layers.0.self_attn.o_proj"), decided.mlp("model.layers.0.mlp") is None
        (True, False)
    """

    source: TensorSource
    layout: TensorParallelLayout
    rank: int
    cfg: QuantizationConfig | None
    channels: dict[str, torch.Tensor | None] = field(default_factory=dict)
    gathered: dict[str, bool] = field(default_factory=dict)

    def mlp(self, mlp: str) -> torch.Tensor | None:
        """This rank's channels of the MLP `mlp` (`model.layers.3.mlp`) in down_proj's group order, or None."""
        if mlp not in self.channels:
            self.channels[mlp] = mlp_channels(self.source, mlp, self.layout, self.rank, self.cfg)
        return self.channels[mlp]

    def o_proj(self, prefix: str) -> bool:
        """Whether the `o_proj` `prefix` is held whole and fed the gathered heads."""
        if prefix not in self.gathered:
            self.gathered[prefix] = o_proj_gathered(self.source, prefix, self.layout, self.cfg)
        return self.gathered[prefix]

    def mismatch(self, source: TensorSource, layout: TensorParallelLayout, rank: int,
                 cfg: QuantizationConfig | None) -> str | None:  # fmt: skip
        """What these decisions were made for that differs from this checkpoint, split, rank and GPTQ settings (as
        "rank 0, another source"), or None."""
        differs = [f"rank {self.rank}"] if self.rank != rank else []
        differs += ["another source"] if self.source is not source else []
        differs += ["another layout"] if self.layout != layout else []
        differs += ["another quant_config"] if self.cfg != cfg else []
        return ", ".join(differs) or None


def act_order_splits(cfg: QuantizationConfig, layout: TensorParallelLayout) -> bool:
    """Whether a split has act-order GPTQ decisions to make: act order (`desc_act`) with groups, over several ranks."""
    return cfg.desc_act and cfg.group_size != -1 and layout.world_size > 1


def o_proj_gathered(
    source: TensorSource, prefix: str, layout: TensorParallelLayout, cfg: QuantizationConfig | None
) -> bool:
    """Whether the act-order `o_proj` `prefix` is replicated and fed the gathered heads: some GPTQ group has rows on
    two ranks' heads (the same answer on every rank: it reads the full `g_idx`)."""
    name = f"{prefix}.g_idx"
    if cfg is None or not act_order_splits(cfg, layout):
        return False
    if name not in source.names():
        return False
    g_idx = source.read(name).to(torch.int64)
    per = layout.rank(0).n_heads * layout.head_dim  # o_proj's rows a rank (every rank the same)
    if g_idx.numel() != per * layout.world_size:  # malformed: the contiguous split's checks name it
        return False
    owner = torch.arange(g_idx.numel()) // per
    pairs = torch.unique(g_idx * layout.world_size + owner)  # one entry per (group, rank holding its rows)
    return bool(torch.unique(pairs // layout.world_size).numel() < pairs.numel())


def mlp_channels(
    source: TensorSource, mlp: str, layout: TensorParallelLayout, rank: int, cfg: QuantizationConfig | None
) -> torch.Tensor | None:
    """Rank `rank`'s intermediate channels of the MLP `mlp` (`model.layers.3.mlp`) in `down_proj`'s
    group order (int64), or None where the contiguous split applies: no act order, no `down_proj.g_idx`,
    a group not of exactly `group_size` rows, or a rank's share not a whole number of groups."""
    if cfg is None or not act_order_splits(cfg, layout):
        return None
    name = f"{mlp}.down_proj.g_idx" if mlp else "down_proj.g_idx"
    share = layout.rank(rank).channels
    if share is None or name not in source.names() or len(share) % cfg.group_size:
        return None
    g_idx = source.read(name).to(torch.int64)
    if tuple(g_idx.shape) != (layout.intermediate_size,):  # malformed: the contiguous split's checks name it
        return None
    order = torch.argsort(g_idx, stable=True)
    if not torch.equal(g_idx[order], torch.arange(g_idx.numel()) // cfg.group_size):
        return None
    return order[share.start : share.stop]


def shard_by_channels(
    source: TensorSource,
    prefix: str,
    present: set[str],
    channels: torch.Tensor,
    layout: TensorParallelLayout,
    rank: int,
    cfg: QuantizationConfig,
) -> dict[str, torch.Tensor]:
    """The rank's tensors of MLP projection `prefix` for `channels` (from `mlp_channels`): columns of
    `gate_proj`/`up_proj`/`gate_up_proj`, rows of `down_proj` (then plain: `g_idx` is `arange // group_size`),
    named as in the checkpoint."""
    leaf = prefix.rpartition(".")[2]
    inter = layout.intermediate_size
    if leaf not in MLP_LEAVES or inter is None:
        raise ShardingError(
            f"tensor parallel: {prefix} is not an MLP projection of a layout with intermediate_size"
        )
    if leaf == "down_proj":
        out = _rows(source, prefix, present, channels, rank, cfg)
    else:  # a stacked gate_up_proj holds gate's I columns, then up's
        cols = torch.cat([channels, channels + inter]) if leaf == "gate_up_proj" else channels
        out = _columns(source, prefix, present, cols, cfg)
    return {f"{prefix}.{k}": v for k, v in out.items()}


def pick_packed_rows(qweight: torch.Tensor, rows: torch.Tensor, bits: int, chunk: int = 512) -> torch.Tensor:
    """`pack_rows(unpack_rows(qweight)[rows])`: GPTQ words packed along K, the rows picked in order, `chunk` columns
    at a time (unpacking works in int64: a whole Llama-3-70B down_proj at once would take several GB).

    Example:
        >>> pick_packed_rows(pack_rows(q, 4), torch.tensor([3, 0, 1, 2, 4, 5, 6, 7]), 4)  # == pack_rows(q[order], 4)
    """
    parts = [
        pack_rows(unpack_rows(qweight[:, c : c + chunk], bits).index_select(0, rows), bits)
        for c in range(0, qweight.shape[1], chunk)
    ]
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def _columns(
    src: TensorSource, prefix: str, present: set[str], cols: torch.Tensor, cfg: QuantizationConfig
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if "weight" in present:  # dense [N, K]
        out["weight"] = src.read(f"{prefix}.weight").index_select(0, cols).contiguous()
    if "qweight" in present:
        out["qweight"] = src.read(f"{prefix}.qweight").index_select(1, cols).contiguous()
        out["scales"] = src.read(f"{prefix}.scales").index_select(1, cols).contiguous()
        if "qzeros" in present:  # packed along N: unpack the columns, pick, pack again
            zeros = unpack_rows(src.read(f"{prefix}.qzeros").t(), cfg.bits).index_select(0, cols)
            out["qzeros"] = pack_rows(zeros, cfg.bits).t().contiguous()
        if "g_idx" in present:
            out["g_idx"] = src.read(f"{prefix}.g_idx")
    if "bias" in present:
        out["bias"] = src.read(f"{prefix}.bias").index_select(0, cols).contiguous()
    return out


def _rows(
    src: TensorSource, prefix: str, present: set[str], rows: torch.Tensor, rank: int, cfg: QuantizationConfig
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}  # a GPTQ down_proj: `mlp_channels` read its g_idx
    if "qweight" in present:
        out["qweight"] = pick_packed_rows(src.read(f"{prefix}.qweight"), rows, cfg.bits)
        g_idx = src.read(f"{prefix}.g_idx").to(torch.int64).index_select(0, rows)  # sorted: whole groups
        first, groups = int(g_idx[0]), rows.numel() // cfg.group_size
        out["scales"] = src.read(f"{prefix}.scales", 0, first, first + groups).contiguous()
        if "qzeros" in present:
            out["qzeros"] = src.read(f"{prefix}.qzeros", 0, first, first + groups).contiguous()
        if "g_idx" in present:
            out["g_idx"] = (g_idx - first).to(torch.int32)
    if "bias" in present:  # summed over the ranks by the allreduce: add it once
        bias = src.read(f"{prefix}.bias")
        out["bias"] = bias if rank == 0 else torch.zeros_like(bias)
    return out
