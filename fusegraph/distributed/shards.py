"""Each rank's slice of a checkpoint: dense and GPTQ tensors, read from memory or
straight from safetensors (`safe_open(...).get_slice`, so a rank reads only its rows).

Rules by the projection's leaf name (HF names; anything else is replicated):

| projection | split | what |
|---|---|---|
| `q_proj` / `k_proj` / `v_proj` (`qkv_proj`) | column (N) | the rank's q heads / kv heads |
| `o_proj` | row (K) | the rank's q heads |
| `gate_proj` / `up_proj` (`gate_up_proj`) | column (N) | the rank's intermediate channels |
| `down_proj` | row (K) | the rank's intermediate channels |
| `lm_head` | column (N) | the rank's vocabulary rows |

GPTQ (`qweight [K·bits/32, N]`, `qzeros [G, N·bits/32]`, `scales [G, N]`, `g_idx [K]`):

- column: `qweight`, `scales` and `qzeros` are cut along N (N boundaries must fall on whole
  int32 words of qzeros); `g_idx` is kept whole.
- row: `qweight` is cut along K; a rank takes the groups its rows use. Without act-order
  the K boundaries must be group boundaries, else `GroupSplitError`. With act-order an
  MLP's channels are dealt out in `down_proj`'s group order, and an `o_proj` whose groups the
  heads' split cuts is replicated (`act_order_shards.py`). Otherwise (`whole_groups=False`,
  or groups not of exactly group_size rows) the rank's groups are renumbered (`g_idx`
  remapped, `scales`/`qzeros` rows picked); a group whose rows lie on several ranks is
  duplicated on each, as vLLM does, and the shard's layer then declares a smaller group size
  (`row_group_size`) so that its group count holds them.
- a row-parallel bias is added once: rank 0 holds it, the other ranks hold zeros.

Example:
    >>> source = SafetensorsSource.from_folder("ckpt/")
    >>> state = shard_state(source, layout, rank=1, quant_config=cfg)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import torch

from fusegraph.distributed.act_order_shards import MLP_LEAVES, WholeGroupDecisions, shard_by_channels
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.sharding import GroupSplitError, RankShare, ShardingError, TensorParallelLayout

Split = Literal["column", "row"]
GPTQ_PARAMS = ("qweight", "qzeros", "scales", "g_idx")


class TensorSource(Protocol):
    """Named tensors that can be read whole or as one contiguous range of one dim."""

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> list[int]: ...

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int = 0) -> torch.Tensor: ...


class _SafeSlice(Protocol):
    """What this module uses of safetensors' `PySafeSlice` (its stub leaves it untyped)."""

    def get_shape(self) -> list[int]: ...

    def __getitem__(self, index: slice | tuple[slice, ...]) -> torch.Tensor: ...


class _SafeHandle(Protocol):
    """What this module uses of a `safe_open(..., framework="pt")` handle."""

    def keys(self) -> list[str]: ...

    def get_slice(self, name: str) -> _SafeSlice: ...


@dataclass
class DictSource:
    """A TensorSource over tensors already in memory (e.g. a full `state_dict`)."""

    tensors: Mapping[str, torch.Tensor]

    def names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> list[int]:
        return list(_lookup(self.tensors, name).shape)

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int = 0) -> torch.Tensor:
        t = _lookup(self.tensors, name)
        return t if dim is None else t.narrow(dim, start, stop - start)


class SafetensorsSource:
    """A TensorSource over safetensors files that reads only the requested slices."""

    def __init__(self, files: Iterable[str | Path]) -> None:
        from safetensors import safe_open

        self._handles: dict[str, _SafeHandle] = {}
        for file in files:
            handle: _SafeHandle = safe_open(str(file), framework="pt")
            for name in handle.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                self._handles[name] = handle
        self.bytes_read = 0

    @staticmethod
    def from_folder(folder: str | Path) -> SafetensorsSource:
        """Every `*.safetensors` file of `folder`."""
        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise ShardingError(f"{folder}: no *.safetensors files to shard")
        return SafetensorsSource(files)

    def names(self) -> list[str]:
        return list(self._handles)

    def shape(self, name: str) -> list[int]:
        return list(_lookup(self._handles, name).get_slice(name).get_shape())

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int = 0) -> torch.Tensor:
        part = _lookup(self._handles, name).get_slice(name)
        if dim is None:
            t = part[:]
        else:
            index = [slice(None)] * len(part.get_shape())
            index[dim] = slice(start, stop)
            t = part[tuple(index)]
        self.bytes_read += t.numel() * t.element_size()
        return t


def _block(bits: int) -> tuple[int, int]:
    """(int32 words, values) of GPTQ's smallest whole packing block (3 words hold 32 3-bit values)."""
    return (3, 32) if bits == 3 else (1, 32 // bits)


_T = TypeVar("_T")


def _lookup(table: Mapping[str, _T], name: str) -> _T:
    if name not in table:
        raise ShardingError(f"checkpoint: no tensor named {name!r}")
    return table[name]


# --- which split each projection gets --------------------------------------------------
def projection_split(
    leaf: str, share: RankShare, layout: TensorParallelLayout
) -> tuple[Split, list[range]] | None:
    """(split, ranges of N or K) for projection `leaf` on this rank; None: replicated."""
    q, kv = share.q_cols, share.kv_cols
    if leaf in ("q_proj", "k_proj", "v_proj"):
        return "column", [q if leaf == "q_proj" else kv]
    if leaf == "qkv_proj":
        qd, kvd = layout.n_heads * layout.head_dim, layout.n_kv_heads * layout.head_dim
        return "column", [q, _shift(kv, qd), _shift(kv, qd + kvd)]
    if leaf == "o_proj":
        return "row", [q]
    if leaf in ("gate_proj", "up_proj", "down_proj", "gate_up_proj"):
        if share.channels is None or layout.intermediate_size is None:
            raise ShardingError(f"tensor parallel: {leaf} needs the layout's intermediate_size")
        if leaf == "gate_up_proj":
            return "column", [share.channels, _shift(share.channels, layout.intermediate_size)]
        return ("row" if leaf == "down_proj" else "column"), [share.channels]
    if leaf == "lm_head":
        if share.vocab is None:
            raise ShardingError("tensor parallel: lm_head needs the layout's vocab_size")
        return "column", [share.vocab]
    return None


def _shift(r: range, by: int) -> range:
    return range(r.start + by, r.stop + by)


def shard_state(
    source: TensorSource,
    layout: TensorParallelLayout,
    rank: int,
    quant_config: QuantizationConfig | None = None,
    names: Iterable[str] | None = None,
    whole_groups: bool = True,
    decisions: WholeGroupDecisions | None = None,
) -> dict[str, torch.Tensor]:
    """Rank `rank`'s tensors of a full checkpoint, named as in the checkpoint.

    Args:
        source: The full checkpoint (`DictSource` or `SafetensorsSource`).
        layout: The split (from `ShardingStrategy.layout`).
        rank: Which rank's share to read.
        quant_config: The GPTQ settings of the quantized projections (None: dense model).
        names: Only these tensors (default: all of the source's).
        whole_groups: Act-order shards hold whole groups (`act_order_shards.py`): the MLP's
            channels in `down_proj`'s group order, an `o_proj` whose groups the heads' split
            cuts read whole (replicated). False: the index-order split, each row-parallel shard
            duplicating the groups it shares (the split before; the benchmarks' baseline).
        decisions: The act-order decisions already made for this source, layout, rank and
            quant_config (`model.act_order_plan` keeps them), reused instead of read again.

    Raises:
        GroupSplitError: A row split would cut a GPTQ group.
        ShardingError: A column split does not fall on whole qzeros words, or `decisions` were made
            for another source, layout, rank or quant_config.
    """
    if decisions is None:
        decisions = WholeGroupDecisions(source, layout, rank, quant_config)
    elif why := decisions.mismatch(source, layout, rank, quant_config):
        raise ShardingError(
            f"tensor parallel: shard_state for rank {rank} was given act-order decisions made for {why}"
        )
    share = layout.rank(rank)
    wanted = list(names) if names is not None else source.names()
    out: dict[str, torch.Tensor] = {}
    done: set[str] = set()
    for name in wanted:
        prefix, _, param = name.rpartition(".")
        mlp, _, leaf = prefix.rpartition(".")
        split = projection_split(leaf, share, layout) if prefix else None
        # an o_proj replicated and fed the gathered heads (act_order_shards.py)
        if split is None or (leaf == "o_proj" and whole_groups and decisions.o_proj(prefix)):
            out[name] = source.read(name)
            continue
        if prefix in done:
            continue
        done.add(prefix)
        present = {p for p in ("weight", "bias", *GPTQ_PARAMS) if f"{prefix}.{p}" in wanted}
        # each MLP's channels in down_proj's group order (act_order_shards.py), or None
        channels = decisions.mlp(mlp) if leaf in MLP_LEAVES and whole_groups else None
        if channels is not None and quant_config is not None:
            out.update(shard_by_channels(source, prefix, present, channels, layout, rank, quant_config))
        else:
            out.update(_shard_projection(source, prefix, present, split, rank, quant_config))
    return out


def _shard_projection(
    src: TensorSource,
    prefix: str,
    present: set[str],
    split: tuple[Split, list[range]],
    rank: int,
    cfg: QuantizationConfig | None,
) -> dict[str, torch.Tensor]:
    kind, ranges = split
    out: dict[str, torch.Tensor] = {}
    if "weight" in present:  # dense [N, K]
        out["weight"] = _cat(src, f"{prefix}.weight", 0 if kind == "column" else 1, ranges)
    if "qweight" in present:
        if cfg is None:
            raise ShardingError(
                f"tensor parallel: {prefix}.qweight is quantized but no quant_config was given"
            )
        out.update(_gptq_column(src, prefix, present, ranges, cfg) if kind == "column" else {})
        out.update(_gptq_row(src, prefix, present, ranges[0], cfg) if kind == "row" else {})
    if "bias" in present:
        if kind == "column":
            out["bias"] = _cat(src, f"{prefix}.bias", 0, ranges)
        else:  # summed over the ranks by the allreduce: add it once
            bias = src.read(f"{prefix}.bias")
            out["bias"] = bias if rank == 0 else torch.zeros_like(bias)
    return {f"{prefix}.{k}": v for k, v in out.items()}


def _cat(src: TensorSource, name: str, dim: int, ranges: list[range]) -> torch.Tensor:
    parts = [src.read(name, dim, r.start, r.stop) for r in ranges]
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, dim)


def _gptq_column(
    src: TensorSource, prefix: str, present: set[str], ranges: list[range], cfg: QuantizationConfig
) -> dict[str, torch.Tensor]:
    words, per = _block(cfg.bits)
    for r in ranges:
        if r.start % per or r.stop % per:
            raise ShardingError(
                f"tensor parallel: {prefix}: column split [{r.start}, {r.stop}) of N does not fall on whole "
                f"qzeros words ({per} {cfg.bits}-bit values per {words} int32 word(s))"
            )
    out = {
        "qweight": _cat(src, f"{prefix}.qweight", 1, ranges),
        "scales": _cat(src, f"{prefix}.scales", 1, ranges),
    }
    if "qzeros" in present:
        packed = [range(r.start // per * words, r.stop // per * words) for r in ranges]
        out["qzeros"] = _cat(src, f"{prefix}.qzeros", 1, packed)
    if "g_idx" in present:
        out["g_idx"] = src.read(f"{prefix}.g_idx")
    return out


def _gptq_row(
    src: TensorSource, prefix: str, present: set[str], rows: range, cfg: QuantizationConfig
) -> dict[str, torch.Tensor]:
    words, per = _block(cfg.bits)
    k0, k1 = rows.start, rows.stop
    if k0 % per or k1 % per:
        raise ShardingError(
            f"tensor parallel: {prefix}: row split [{k0}, {k1}) of K does not fall on whole qweight words "
            f"({per} {cfg.bits}-bit values per {words} int32 word(s))"
        )
    out = {"qweight": src.read(f"{prefix}.qweight", 0, k0 // per * words, k1 // per * words)}
    groups = _row_groups(src, prefix, present, rows, cfg)
    out["scales"] = _pick_rows(src, f"{prefix}.scales", groups.global_ids)
    if "qzeros" in present:
        out["qzeros"] = _pick_rows(src, f"{prefix}.qzeros", groups.global_ids)
    if "g_idx" in present:
        out["g_idx"] = groups.local_g_idx
    return out


@dataclass
class _Groups:
    global_ids: list[int]  # the global groups this rank's rows use, ascending (+ padding)
    local_g_idx: torch.Tensor  # g_idx of the rank's rows, renumbered into global_ids


def _row_groups(
    src: TensorSource, prefix: str, present: set[str], rows: range, cfg: QuantizationConfig
) -> _Groups:
    words, per = _block(cfg.bits)
    k0, k1, k = rows.start, rows.stop, src.shape(f"{prefix}.qweight")[0] // words * per
    if cfg.group_size == -1:  # one group for every row: each rank keeps it whole
        return _Groups([0], torch.zeros(k1 - k0, dtype=torch.int32))
    gs = cfg.group_size
    if "g_idx" in present and cfg.desc_act:
        mine = src.read(f"{prefix}.g_idx").to(torch.int64)[k0:k1]
        ids = torch.unique(mine)
        # Groups shared with other ranks are duplicated here (vLLM keeps every group's scales
        # on every rank); the shard's group count is padded to a whole number of groups.
        size = local_group_size(k1 - k0, ids.numel(), gs, prefix)
        padded = [int(i) for i in ids] + [int(ids[-1])] * ((k1 - k0) // size - ids.numel())
        return _Groups(padded, torch.searchsorted(ids, mine).to(torch.int32))
    if k0 % gs or k1 % gs:
        raise GroupSplitError(
            f"tensor parallel: {prefix}: the row split [{k0}, {k1}) of K={k} cuts GPTQ group {k0 // gs if k0 % gs else (k1 - 1) // gs} "
            f"(group_size {gs}, desc_act=False); row-parallel layers need the split on group boundaries: "
            f"use a world size that gives each rank whole groups"
        )
    return _Groups(list(range(k0 // gs, k1 // gs)), torch.arange(k1 - k0, dtype=torch.int32) // gs)


def local_group_size(rows: int, groups: int, group_size: int, what: str = "projection") -> int:
    """The group size of an act-order row shard of `rows` rows that uses `groups` groups:
    `group_size` when they fit, else the largest divisor of `rows` giving at least `groups`
    groups (the extra groups are padding that no row uses).

    Raises:
        GroupSplitError: No such divisor (more groups than rows).
    """
    if groups <= rows // group_size and rows % group_size == 0:
        return group_size
    size = next((d for d in range(min(group_size, rows // groups), 0, -1) if rows % d == 0), 0)
    if size == 0:
        raise GroupSplitError(
            f"tensor parallel: {what}: a shard of {rows} rows cannot hold the {groups} GPTQ groups its rows use"
        )
    return size


def row_group_size(source: TensorSource, prefix: str, rows: range, cfg: QuantizationConfig) -> int:
    """The group size the rank's layer must declare for row-parallel projection `prefix`
    (its act-order rows may use more groups than `len(rows) / group_size`)."""
    if cfg.group_size == -1 or not cfg.desc_act or f"{prefix}.g_idx" not in source.names():
        return cfg.group_size
    mine = source.read(f"{prefix}.g_idx", 0, rows.start, rows.stop)
    return local_group_size(len(rows), int(torch.unique(mine).numel()), cfg.group_size, prefix)


def _pick_rows(src: TensorSource, name: str, ids: list[int]) -> torch.Tensor:
    lo, hi = ids[0], ids[-1] + 1
    block = src.read(name, 0, lo, hi)
    if hi - lo == len(ids):
        return block.contiguous()
    return block.index_select(0, torch.tensor([i - lo for i in ids])).contiguous()
