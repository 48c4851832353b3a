"""`load_model_shard`: one rank's share of a Hugging Face model directory, as a `DecoderModel`
whose graph holds the collectives.

Each rank builds its own model from a per-rank config (`num_attention_heads / n`,
`num_key_value_heads / n` (or 1, replicated), `intermediate_size / n`) with
`tp_reduce = fg.allreduce` after `o_proj` and `down_proj`, and, for an untied `lm_head`,
`vocab_size / n` rows and `logits_gather = fg.allgather(axis=1)`. A tied `lm_head` (the
embedding) stays replicated: every rank computes the full logits, no gather. Its weights are
read from the safetensors files slice by slice (`fusegraph.distributed.shards`), so a rank
never loads the other ranks' rows. Its KV cache (`model.kv_params`, `model.kv_manager`) holds
only its kv heads. The graph's inputs and outputs are those of `DecoderModel`; every rank gets
the same logits.

Example:
    >>> def rank_main(info):                       # launch(rank_main, 2) or torchrun
    ...     model = load_model_shard("llama-gptq/", rank=info.rank, world_size=info.world_size)
    ...     run = model.compile(num_blocks=64)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusegraph import ops
from fusegraph.compiler import DeviceRef, DType, TensorValue
from fusegraph.distributed.act_order_shards import WholeGroupDecisions, act_order_splits
from fusegraph.distributed.groups import DEFAULT_GROUP
from fusegraph.distributed.shards import SafetensorsSource, TensorSource, row_group_size, shard_state
from fusegraph.nn.decoder import DecoderModel
from fusegraph.nn.hf_config import ModelConfig, ModelLoadError, parse_dtype
from fusegraph.nn.hf_loader import SafetensorsDir, _device, _stack_layers
from fusegraph.nn.linear import GPTQLinear
from fusegraph.nn.mlp import make_linear
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.sharding import (
    GroupSplitError,
    RankShare,
    ShardingError,
    ShardingStrategy,
    TensorParallelLayout,
)
from fusegraph.nn.transformer import TransformerBlock

if TYPE_CHECKING:
    import torch


def model_layout(config: ModelConfig, strategy: ShardingStrategy) -> TensorParallelLayout:
    """The split of `config`'s heads, channels and (untied) vocabulary over the strategy's ranks.

    Raises:
        HeadsNotDivisibleError: Heads do not split over the world size.
        GroupSplitError: Without act order, a row-parallel shard (`o_proj` or `down_proj`)
            would not hold whole GPTQ groups.
        ShardingError: `intermediate_size` or an untied `vocab_size` does not divide.
    """
    c = config
    layout = strategy.layout(
        n_heads=c.num_attention_heads,
        n_kv_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        intermediate_size=c.intermediate_size,
        vocab_size=None if c.tie_word_embeddings else c.vocab_size,
    )
    if (q := c.quantization) is not None and q.group_size != -1 and not q.desc_act and strategy.is_sharded:
        share = layout.rank(0)
        for proj, rows in (("o_proj", share.n_heads * c.head_dim), ("down_proj", share.intermediate_size)):
            if rows is not None and rows % q.group_size:
                raise GroupSplitError(
                    f"tensor parallel: {proj}'s rows split into shards of {rows}, which cuts GPTQ groups of "
                    f"group_size {q.group_size}; use a world size that gives whole groups"
                )
    return layout


def rank_config(config: ModelConfig, share: RankShare) -> ModelConfig:
    """`config` with this rank's head counts and intermediate size."""
    return dataclasses.replace(
        config,
        num_attention_heads=share.n_heads,
        num_key_value_heads=share.n_kv_heads,
        intermediate_size=share.intermediate_size or config.intermediate_size,
    )


@dataclass(frozen=True)
class ActOrderPlan:
    """A rank's act-order GPTQ projections that are not plain row shards (see `act_order_plan`).

    Attributes:
        row_quant: A row-parallel projection (`model.layers.3.mlp.down_proj`) -> the GPTQ settings its shard
            declares: `desc_act=False` for a down_proj in group order, a smaller group size for a shard of
            duplicated groups.
        gathered: The `o_proj`s every rank holds whole and runs on the gathered heads (`fg.allgather` before,
            no `fg.allreduce` after).
        decisions: The act-order decisions these came from (None where there are none to make), for
            `shard_state` to read the rank's tensors by instead of reading each g_idx again.
    """

    row_quant: Mapping[str, QuantizationConfig] = field(default_factory=dict)
    gathered: frozenset[str] = frozenset()
    decisions: WholeGroupDecisions | None = None


def act_order_plan(
    source: TensorSource,
    config: ModelConfig,
    layout: TensorParallelLayout,
    rank: int,
    whole_groups: bool = True,
) -> ActOrderPlan:
    """How rank `rank` holds the act-order projections of `config` (`act_order_shards.py`): with `whole_groups`
    (as for `shard_state`), the MLP's channels in down_proj's group order (a plain down_proj shard) and an o_proj
    whose groups the heads' split cuts gathered; otherwise a shard whose groups other ranks share declares a
    smaller group size (`shards.row_group_size`)."""
    q = config.quantization
    if q is None or not act_order_splits(q, layout):
        return ActOrderPlan()
    share, row_quant, gathered = layout.rank(rank), {}, set()
    decided = WholeGroupDecisions(source, layout, rank, q)
    for i in range(config.num_hidden_layers):
        mlp, o_proj = f"model.layers.{i}.mlp", f"model.layers.{i}.self_attn.o_proj"
        if whole_groups and decided.o_proj(o_proj):
            gathered.add(o_proj)
        if whole_groups and decided.mlp(mlp) is not None:
            row_quant[f"{mlp}.down_proj"] = dataclasses.replace(q, desc_act=False)
        for prefix, rows in ((o_proj, share.q_cols), (f"{mlp}.down_proj", share.channels)):
            if prefix in row_quant or prefix in gathered or rows is None:
                continue
            if (size := row_group_size(source, prefix, rows, q)) != q.group_size:
                row_quant[prefix] = dataclasses.replace(q, group_size=size)
    return ActOrderPlan(row_quant, frozenset(gathered), decided if whole_groups else None)


def build_model_shard(
    config: ModelConfig,
    strategy: ShardingStrategy,
    rank: int,
    *,
    group: str = DEFAULT_GROUP,
    act_order: ActOrderPlan | None = None,
    **model_kwargs: Any,
) -> DecoderModel:
    """The (unloaded) `DecoderModel` of `rank`: divided heads and channels, collectives wired.

    `act_order` (from `act_order_plan`) names the act-order projections sharded otherwise than by
    a plain row split. `model_kwargs` go to `DecoderModel` (dtype, device, fuse, stacked_qkv, ...).
    """
    layout = model_layout(config, strategy)
    share, n = layout.rank(rank), strategy.world_size
    if n == 1:
        return DecoderModel(config, **model_kwargs)

    def reduce(x: TensorValue) -> TensorValue:
        return ops.allreduce(x, group=group, world_size=n)

    # the logits' vocabulary, or the heads before a gathered o_proj
    def gather(x: TensorValue) -> TensorValue:
        return ops.allgather(x, axis=1, group=group, world_size=n)

    tied = config.tie_word_embeddings
    model = DecoderModel(
        rank_config(config, share), tp_reduce=reduce, logits_gather=None if tied else gather, **model_kwargs
    )
    if not tied and share.vocab_size is not None:  # column-parallel lm_head: this rank's rows
        quant = config.quantization if model_kwargs.get("quantized_lm_head") else None
        model.lm_head = make_linear(
            config.hidden_size,
            share.vocab_size,
            dtype=model.dtype,
            device=model.device,
            quant_config=quant,
            scales_dtype=model.scales_dtype,
        )
    plan = act_order or ActOrderPlan()
    for prefix, quant in plan.row_quant.items():
        _regroup(model, prefix, quant)
    for prefix in sorted(plan.gathered):
        _gather_o_proj(model, prefix, n, gather)
    return model


def _module(model: DecoderModel, path: list[str]) -> Any:
    node: Any = model
    for part in path:
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _regroup(model: DecoderModel, prefix: str, cfg: QuantizationConfig) -> None:
    """Replace the GPTQ projection `prefix` by one declaring `cfg` (same names)."""
    *path, leaf = prefix.split(".")
    parent = _module(model, path)
    old = getattr(parent, leaf)
    if not isinstance(old, GPTQLinear):
        raise ShardingError(f"tensor parallel: {prefix} is not a GPTQ projection; cannot regroup it")
    new = GPTQLinear(old.in_dim, old.out_dim, cfg, old.dtype, old.device, old.has_bias, old.clip_weight,
                     scales_dtype=old._params["scales"].dtype)  # fmt: skip
    setattr(parent, leaf, new)


def _gather_o_proj(
    model: DecoderModel, prefix: str, world_size: int, gather: Callable[[TensorValue], TensorValue]
) -> None:
    """Make `prefix` (`model.layers.3.self_attn.o_proj`) the whole projection, fed the heads of all ranks, and
    take the all-reduce off its block's attention output."""
    *block_path, attn_name, leaf = prefix.split(".")
    block = _module(model, block_path)
    attention = getattr(block, attn_name)
    old = getattr(attention, leaf)
    if not isinstance(block, TransformerBlock) or not isinstance(old, GPTQLinear):
        raise ShardingError(
            f"tensor parallel: {prefix} is not the GPTQ o_proj of a decoder block; cannot gather it"
        )
    new = GatheredGPTQLinear(gather, old.in_dim * world_size, old.out_dim, old.quant_config, old.dtype, old.device,
                             old.has_bias, old.clip_weight, scales_dtype=old._params["scales"].dtype)  # fmt: skip
    setattr(attention, leaf, new)
    block.reduce_attention = False


class GatheredGPTQLinear(GPTQLinear):
    """A whole GPTQ projection run on its input gathered from every rank by `gather`: a tensor-parallel o_proj whose
    act-order groups the heads' split would cut. The other arguments, the parameters and their names are
    `GPTQLinear`'s."""

    def __init__(self, gather: Callable[[TensorValue], TensorValue], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gather = gather

    def __call__(self, x: TensorValue) -> TensorValue:
        return super().__call__(self.gather(x))


def load_model_shard(
    path: str | Path,
    *,
    rank: int,
    world_size: int,
    device: str | DeviceRef = "cpu",
    devices: Sequence[str | DeviceRef] | None = None,
    dtype: str | DType | torch.dtype | None = None,
    fuse: bool = True,
    max_seq_len: int | None = None,
    page_size: int = 16,
    group: str = DEFAULT_GROUP,
) -> DecoderModel:
    """Rank `rank`'s share of the model directory `path` (see the module docstring).

    Args:
        path: A Llama/Mistral/Qwen2/Qwen3 directory (dense or GPTQ), as for `load_model`.
        rank: This process's rank.
        world_size: The tensor-parallel size.
        device: Where this rank's weights and cache live ("cpu", "cuda:N", a DeviceRef).
        devices: One device per rank instead (`devices[rank]` is used); its length must be
            `world_size`.
        dtype: Activation/cache dtype (default: the checkpoint's).
        fuse: Fused rope/split/store and stacked q/k/v, gate/up where the g_idx allow.
        max_seq_len: Rows of the rope table.
        page_size: Tokens per KV-cache page.
        group: The process-group name the collectives use.

    Raises:
        HeadsNotDivisibleError, GroupSplitError, ShardingError: The model does not split.
        WorldSizeMismatchError: `devices` does not hold `world_size` devices.
        ModelLoadError: As `load_model` (a missing directory, config or tensor).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: not a directory")
    config = ModelConfig.from_file(folder / "config.json")
    strategy = ShardingStrategy.tensor_parallel(world_size, devices)
    if devices is not None:
        device = devices[rank]
    files = SafetensorsDir(folder)
    kwargs: dict[str, Any] = dict(
        dtype=parse_dtype(dtype) if dtype is not None else config.dtype,
        device=_device(device),
        quantized_lm_head="lm_head.qweight" in files,
        max_seq_len=max_seq_len,
        page_size=page_size,
        fuse=fuse,
    )
    source = SafetensorsSource(sorted(set(files.origin.values())))
    layout = model_layout(config, strategy)
    kwargs["act_order"] = plan = act_order_plan(source, config, layout, rank)
    plain = build_model_shard(config, strategy, rank, group=group, **kwargs)
    wanted = [n for n, _ in plain.named_params()]
    wanted += [n for n, _ in plain.named_accepted() if n in files]
    state = shard_state(source, layout, rank, config.quantization, wanted, decisions=plan.decisions)
    specs = dict(plain.named_params())
    for name, tensor in state.items():
        want = specs[name].dtype.to_torch() if name in specs else tensor.dtype
        if tensor.dtype != want and tensor.is_floating_point() and want.is_floating_point:
            state[name] = tensor.to(want)
    local = rank_config(config, layout.rank(rank))
    qkv = gate_up = [False] * config.num_hidden_layers
    if fuse:
        state, qkv, gate_up = _stack_layers(state, local)
    model = plain
    if any(qkv) or any(gate_up):
        model = build_model_shard(
            config, strategy, rank, group=group, stacked_qkv=qkv, stacked_gate_up=gate_up, **kwargs
        )
    model.load_state_dict(state)
    return model
