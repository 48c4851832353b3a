"""Collectives for tensor parallelism: `fg.allreduce` (sum) and `fg.allgather`.

Each rank runs its own shard of the graph; a collective joins the ranks of one process
group, named by the `group` property and registered per rank in
`fusegraph.distributed` (the IR never holds a process group). `world_size` is the group's
size the graph was built for; the run checks it.

- `fg.allreduce`: every rank gets the elementwise **sum** of the ranks' inputs (same shape).
  Row-parallel layers (`o_proj`, `down_proj`) end with one.
- `fg.allgather {axis}`: the ranks' inputs concatenated along `axis` in rank order, so that
  dim grows `world_size` times. The column-parallel `lm_head` gathers its logits with one.

A collective is **not pure**: it synchronizes with the other ranks, so two identical ones
are two exchanges and an unused one still has to run on every rank. The ops carry memory
read and write effects (no `Pure`), so `cse`, `dce`, `canonicalize` and xDSL's drivers
never merge, erase or move them, and the runtime never folds them (they have operands).

Lowering: the torch implementation calls `torch.ops.fusegraph.all_reduce` /
`all_gather` (custom torch.library ops, which run `torch.distributed.all_reduce` /
`all_gather_into_tensor` in the registered group); `to_torch_mlir(mode="custom")` emits them
as `torch.operator "torch.fusegraph.all_reduce"`. There is no decomposed form: mode
"decomposed" (and so the IREE backend) refuses them with `CollectiveLoweringError`.

Example:
    >>> partial = o_proj(attn)                         # [T, hidden], this rank's heads only
    >>> h = ops.allreduce(partial, group="tp", world_size=2)
    >>> logits = ops.allgather(local_logits, axis=1, group="tp", world_size=2)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import MemoryReadEffect, MemoryWriteEffect

from fusegraph.compiler.graph import emit_tensor
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_tensor, normalize_axis


class CollectiveLoweringError(NotImplementedError):
    """A collective op met a lowering that cannot express it (mode "decomposed", IREE)."""


def _check_props(op: str, group: str, world_size: int) -> None:
    if not group:
        raise ValueError(f"{op}: group must be a non-empty process-group name")
    if isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"{op}: world_size must be a positive int, got {world_size!r}")


def _group_props(group: str, world_size: int) -> dict[str, Attribute]:
    return {"group": StringAttr(group), "world_size": IntegerAttr(world_size, i64)}


# --- ops ------------------------------------------------------------------------------
_EFFECTS = traits_def(MemoryReadEffect(), MemoryWriteEffect())


@register_op
@irdl_op_definition
class AllReduceOp(FgOp):
    """`%y = fg.allreduce %x {group = "tp", world_size = 2 : i64}`: the sum over the ranks.

    Example:
        >>> op = AllReduceOp(partial, group="tp", world_size=2)
    """

    name = "fg.allreduce"
    input = operand_def(TensorType)
    group = prop_def(StringAttr)
    world_size = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = _EFFECTS
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: Operand, *, group: str = "tp", world_size: int) -> None:
        rule = partial(self.rule, group=group, world_size=world_size)
        super().__init__([input], _group_props(group, world_size), rule=rule)

    def infer_types(self) -> Sequence[Attribute]:
        return self.rule(self.input.type, group=self.group.data, world_size=self.world_size.value.data)

    @staticmethod
    def rule(x: Attribute, *, group: str, world_size: int) -> list[Attribute]:
        """The shape rule: a non-bool `x` keeps its type."""
        x = expect_tensor("fg.allreduce", "input", x)
        _check_props("fg.allreduce", group, world_size)
        if x.dtype.name == "bool":
            raise ValueError("fg.allreduce: input dtype bool cannot be summed; use a numeric dtype")
        return [x]


@register_op
@irdl_op_definition
class AllGatherOp(FgOp):
    """`%y = fg.allgather %x {axis = 1 : i64, group = "tp", world_size = 2 : i64}`: the
    ranks' inputs concatenated along `axis`, in rank order.

    Example:
        >>> op = AllGatherOp(local_logits, axis=1, group="tp", world_size=2)
    """

    name = "fg.allgather"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    group = prop_def(StringAttr)
    world_size = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = _EFFECTS
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: Operand, *, axis: int, group: str = "tp", world_size: int) -> None:
        props: dict[str, Attribute] = {"axis": IntegerAttr(axis, i64), **_group_props(group, world_size)}
        rule = partial(self.rule, axis=axis, group=group, world_size=world_size)
        super().__init__([input], props, rule=rule)

    def infer_types(self) -> Sequence[Attribute]:
        ws = self.world_size.value.data
        return self.rule(self.input.type, axis=self.axis.value.data, group=self.group.data, world_size=ws)

    @staticmethod
    def rule(x: Attribute, *, axis: int, group: str, world_size: int) -> list[Attribute]:
        """The shape rule: dim `axis` of `x` grows `world_size` times."""
        x = expect_tensor("fg.allgather", "input", x)
        _check_props("fg.allgather", group, world_size)
        if x.rank < 1:
            raise ValueError("fg.allgather: input must have rank >= 1, got a scalar")
        axis = normalize_axis("fg.allgather", axis, x.rank)
        shape = list(x.shape)
        shape[axis] = shape[axis] * world_size
        return [TensorType(x.dtype, shape, x.device)]


# --- builders -------------------------------------------------------------------------
def allreduce(x: TensorValue, *, group: str = "tp", world_size: int) -> TensorValue:
    """Sum `x` over the `world_size` ranks of process group `group`.

    Example:
        >>> h = ops.allreduce(partial, group="tp", world_size=2)   # same shape as partial
    """
    return emit_tensor(AllReduceOp(x, group=group, world_size=world_size))


def allgather(x: TensorValue, *, axis: int, group: str = "tp", world_size: int) -> TensorValue:
    """Concatenate the ranks' `x` along `axis` (rank 0's first).

    Example:
        >>> logits = ops.allgather(local, axis=1, group="tp", world_size=2)  # [T, V/2] -> [T, V]
    """
    if isinstance(x, TensorValue) and x.rank >= 1:
        axis = normalize_axis("fg.allgather", axis, x.rank)
    return emit_tensor(AllGatherOp(x, axis=axis, group=group, world_size=world_size))


# --- torch.library ops: what the eager runtime runs -------------------------------------
@torch.library.custom_op("fusegraph::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor, group: str, world_size: int) -> torch.Tensor:
    """The sum of `x` over the ranks of the registered group `group` (a new tensor)."""
    out = x.clone(memory_format=torch.contiguous_format)
    if world_size == 1:
        return out
    import torch.distributed as dist

    from fusegraph.distributed.groups import get_group

    dist.all_reduce(
        out, op=dist.ReduceOp.SUM, group=get_group(group, world_size=world_size, op="fg.allreduce")
    )
    return out


@all_reduce.register_fake
def _all_reduce_fake(x: torch.Tensor, group: str, world_size: int) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fusegraph::all_gather", mutates_args=())
def all_gather(x: torch.Tensor, axis: int, group: str, world_size: int) -> torch.Tensor:
    """`x` of every rank of group `group`, concatenated along `axis` in rank order."""
    if world_size == 1:
        return x.clone(memory_format=torch.contiguous_format)
    import torch.distributed as dist

    from fusegraph.distributed.groups import get_group

    pg = get_group(group, world_size=world_size, op="fg.allgather")
    # The single-tensor all-gather concatenates along dim 0: gather [world * d0, ...], view
    # it as [world, *x.shape], then move the rank dim next to `axis` and merge the two.
    src = x.contiguous()
    gathered = src.new_empty((world_size * src.shape[0], *src.shape[1:]))
    gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # torch < 2.12
    gather_single(gathered, src, group=pg)
    shape = list(src.shape)
    shape[axis] *= world_size
    return gathered.reshape(world_size, *src.shape).movedim(0, axis).reshape(shape).contiguous()


@all_gather.register_fake
def _all_gather_fake(x: torch.Tensor, axis: int, group: str, world_size: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[axis] = shape[axis] * world_size
    return x.new_empty(shape)


# --- torch implementations and direct FX emission --------------------------------------
def _refuse_decomposed(op: AllReduceOp | AllGatherOp) -> CollectiveLoweringError:
    return CollectiveLoweringError(
        f"{op.name}: a collective has no decomposed (pure aten) form, so mode 'decomposed' and the "
        f"IREE backend cannot run tensor-parallel graphs; use the eager backend, or "
        f"to_torch_mlir(mode='custom'), which emits torch.fusegraph.{_library_name(op)}"
    )


def _library_name(op: AllReduceOp | AllGatherOp) -> str:
    return "all_reduce" if isinstance(op, AllReduceOp) else "all_gather"


@torch_impl(AllReduceOp)
def _allreduce_torch(op: AllReduceOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    if ctx.mode != "custom":
        raise _refuse_decomposed(op)
    y: torch.Tensor = torch.ops.fusegraph.all_reduce(x, op.group.data, op.world_size.value.data)
    return y


@torch_impl(AllGatherOp)
def _allgather_torch(op: AllGatherOp, x: torch.Tensor, *, ctx: LoweringContext) -> torch.Tensor:
    if ctx.mode != "custom":
        raise _refuse_decomposed(op)
    y: torch.Tensor = torch.ops.fusegraph.all_gather(
        x, op.axis.value.data, op.group.data, op.world_size.value.data
    )
    return y
