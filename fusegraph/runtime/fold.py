"""Compile-time folding: everything computed from weights and constants alone runs once.

The eager runtime binds the weights into the module and then evaluates, once, every op whose
operands all derive from weights or constants and that has no side effect (no buffer
write, no collective: xDSL's `is_side_effect_free`): `fg.constant`s, a
GPTQ repack of the checkpoint tensors, a weight transposed or concatenated by a pass. Each
value that the per-call part of the graph still reads is kept as a module buffer; weights
that only fed folded ops are dropped, so the module holds each byte once.

Example:
    >>> gm = to_fx(graph, mode="custom", inplace=True)      # gm(*inputs, *weights)
    >>> gm = fold_constants(gm, dict(zip(graph.weights, bound)))
    >>> outputs = gm(*inputs)                                # the weights are buffers now
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch.fx.node import map_arg
from xdsl.traits import is_side_effect_free

from fusegraph.compiler.types import BufferType

if TYPE_CHECKING:
    from torch.fx.node import Argument, ArgumentT

__all__ = ["fold_constants"]

_PURE_TARGETS = (operator.getitem, torch.ops.aten.sym_size.int)


def fold_constants(
    gm: torch.fx.GraphModule,
    weights: Mapping[str, torch.Tensor],
    weight_dims: Mapping[str, int] | None = None,
) -> torch.fx.GraphModule:
    """Bind `weights` into `gm` and evaluate its weight-only part once.

    Args:
        gm: a module from `to_fx`: placeholders are the graph inputs, then one per weight
            (`node.meta["fg_weight_name"]`).
        weights: weight name -> tensor, already checked and on the module's device.
        weight_dims: the symbolic dims that the weights' shapes bind (name -> size), which
            an op computed from weights may need.

    Returns:
        `gm`, edited in place: it takes only the graph inputs. Folded tensors are buffers
        named `_w_*` (a weight used as is), `_const_*` (an operand-free op such as
        `fg.constant`) or `_folded_*` (an op computed from weights).
    """
    values: dict[torch.fx.Node, Any] = {}
    for node in list(gm.graph.nodes):
        if node.op == "placeholder" and (name := node.meta.get("fg_weight_name")) is not None:
            values[node] = weights[name]
    dims = dict(weight_dims or {})
    for node in gm.graph.nodes:
        if node.op == "call_function" and (call := _foldable_call(node, values, dims)) is not None:
            args, kwargs = call
            values[node] = node.target(*args, **kwargs)
    _replace_frontier(gm, values)
    gm.graph.eliminate_dead_code()
    for node in [n for n in gm.graph.nodes if n.op == "placeholder" and n in values]:
        gm.graph.erase_node(node)  # a weight no longer read: the module does not keep it
    gm.graph.lint()
    gm.recompile()
    return gm


def _foldable_call(
    node: torch.fx.Node, values: Mapping[torch.fx.Node, Any], weight_dims: Mapping[str, int]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The concrete (args, kwargs) to evaluate `node` with, if it depends on constants only."""
    operands: list[torch.fx.Node] = []
    map_arg(node.args, operands.append)
    if not all(a in values for a in operands):
        return None
    args = map_arg(node.args, lambda n: values[n])
    if node.target in _PURE_TARGETS:
        return (args, {}) if not node.kwargs else None
    op = getattr(node.target, "fg_op", None)
    if op is None or not is_side_effect_free(op):  # a collective or a buffer write runs per call
        return None
    if any(isinstance(v.type, BufferType) for v in (*op.operands, *op.results)):
        return None
    needed = set().union(*(d.symbols for v in (*op.operands, *op.results) for d in v.type.shape))
    kwargs: dict[str, Any] = {}
    for key, arg in node.kwargs.items():
        name = key.removesuffix("_")  # the dim keyword convention of `to_fx`
        if name in weight_dims:
            kwargs[key] = weight_dims[name]
        elif isinstance(arg, torch.fx.Node) and arg in values:
            kwargs[key] = values[arg]
        elif name in needed:
            return None  # the op's shape depends on an input dim: it runs per call
    return tuple(args), kwargs


def _replace_frontier(gm: torch.fx.GraphModule, values: Mapping[torch.fx.Node, Any]) -> None:
    """Each folded value read by a per-call node becomes buffers (its tensors) or literals."""
    for node, value in values.items():
        readers = [u for u in node.users if u not in values]
        if not readers:
            continue
        with gm.graph.inserting_before(_first_reader(gm, readers)):
            replacement = _as_arg(gm, node, value)
        for user in readers:
            user.args = _substitute(user.args, node, replacement)
            user.kwargs = _substitute(user.kwargs, node, replacement)


def _as_arg(gm: torch.fx.GraphModule, node: torch.fx.Node, value: Any) -> Any:
    """An FX argument standing for `value`: a buffer for a tensor, a literal or tuple otherwise."""
    if isinstance(value, torch.Tensor):
        name = _buffer_name(gm, node)
        gm.register_buffer(name, value)
        return gm.graph.get_attr(name)
    if isinstance(value, (tuple, list)):
        return type(value)(_as_arg(gm, node, v) for v in value)
    return value


def _substitute(arg: ArgumentT, node: torch.fx.Node, replacement: Argument) -> ArgumentT:
    def swap(n: torch.fx.Node) -> Argument:
        return replacement if n is node else n

    return map_arg(arg, swap)


def _first_reader(gm: torch.fx.GraphModule, readers: list[torch.fx.Node]) -> torch.fx.Node:
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    return min(readers, key=order.__getitem__)


def _buffer_name(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    if node.op == "placeholder":
        prefix = "_w_"
    else:
        op = getattr(node.target, "fg_op", None)
        prefix = "_const_" if op is not None and not op.operands else "_folded_"
    name, n = f"{prefix}{node.name}", 1
    while hasattr(gm, name):
        name, n = f"{prefix}{node.name}_{n}", n + 1
    return name
