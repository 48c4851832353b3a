"""Checks of bound weight values, run once when weights are bound (eager and IREE alike): GPTQ `g_idx` entries
name a group, scales are finite, a `perm` operand bound to a weight is a permutation. `perm_operands` also tells
`input_checks.InputChecks` which graph inputs feed a `perm`.

Example:
    >>> check_weights(graph, dict(zip(graph.weights, bound)))  # a ValueError naming the weight and the entry
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from xdsl.ir import Operation, SSAValue

from fusegraph.compiler.graph import Graph
from fusegraph.compiler.types import tensor_type

__all__ = ["check_weights", "perm_operands"]


def check_weights(graph: Graph, weights: Mapping[str, torch.Tensor]) -> None:
    """Check bound weight values once: GPTQ `g_idx` entries in `[0, groups)`, finite scales, `perm` operands
    that are permutations.

    Args:
        graph: the compiled graph.
        weights: name -> bound tensor (any device), for every weight of the graph.

    Raises:
        ValueError: naming the weight, the bad entry and the allowed range.
    """
    weight_of: dict[SSAValue, str] = {op.result: name for name, op in graph.weight_ops.items()}
    from fusegraph.ops.gptq import QMatmulGptqOp
    from fusegraph.ops.norm import check_perm

    for user, value in perm_operands(graph):
        if (name := weight_of.get(value)) is not None:
            try:
                check_perm(weights[name], weights[name].shape[0], user.name)
            except ValueError as err:
                raise ValueError(f"weight {name!r}: {err}") from None

    for op in graph.block.ops:
        if not isinstance(op, QMatmulGptqOp):
            continue
        scales_name = weight_of.get(op.scales)
        g_idx_name = weight_of.get(op.g_idx) if op.g_idx is not None else None
        groups = tensor_type(op.scales).shape[0]
        if scales_name is not None and not bool(torch.isfinite(scales := weights[scales_name]).all()):
            bad = torch.nonzero(~torch.isfinite(scales))[0].tolist()
            raise ValueError(
                f"weight {scales_name!r}: scales must be finite, but entry {bad} is {scales[tuple(bad)].item()}"
            )
        if g_idx_name is None or not groups.is_static:
            continue
        g_idx = weights[g_idx_name]
        wrong = torch.nonzero((g_idx < 0) | (g_idx >= groups.value))
        if wrong.numel():
            i = int(wrong[0, 0])
            raise ValueError(
                f"weight {g_idx_name!r}: g_idx entries must lie in [0, {groups.value}) (the groups of "
                f"{scales_name or 'scales'}), but entry {i} is {int(g_idx[i])}"
            )


def perm_operands(graph: Graph) -> list[tuple[Operation, SSAValue]]:
    """(op, value) for each op's operand named `perm` (rms_norm, add_rms_norm, attention, gptq permute/tiled)."""
    found = []
    for op in graph.block.walk():
        value = getattr(op, "perm", None)
        if isinstance(value, SSAValue) and value in op.operands:
            found.append((op, value))
    return found
