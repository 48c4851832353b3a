"""Matching for `fuse-qkv-projections`: the three projections of one input, guard by guard.

`match_projections(op)` looks at the last of the q/k/v projections of an input (an
`fg.matmul` or an `fg.qmatmul.gptq`) without touching anything, and returns a
`MatmulMatch`/`GptqMatch` or the first reason it failed (a `NotCandidate` for an op that is
not the anchor of a group at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from xdsl.ir import SSAValue

from fusegraph.compiler.types import tensor_type
from fusegraph.compiler.weight import WeightOp
from fusegraph.ops.gptq import QMatmulGptqOp
from fusegraph.ops.matmul import MatmulOp
from fusegraph.ops.shape import PermuteOp
from fusegraph.passes.patterns import NoMatch, NotCandidate, block_index, no_match, users

ProjT = TypeVar("ProjT", MatmulOp, QMatmulGptqOp)


@dataclass
class MatmulMatch:
    """Three `fg.matmul` projections in block order (q, k, v)."""

    group: list[MatmulOp]
    transposed: bool  # weights are `W.T` permutes of `[N, K]`; False: plain `[K, N]`


@dataclass
class GptqMatch:
    """Three `fg.qmatmul.gptq` projections in block order (q, k, v), with equal settings."""

    group: list[QMatmulGptqOp]


def match_projections(op: MatmulOp | QMatmulGptqOp) -> MatmulMatch | GptqMatch | NoMatch:
    """The q/k/v group whose last projection is `op`, or why there is none."""
    if isinstance(op, QMatmulGptqOp):
        if isinstance(gptq := _group(op), NoMatch):
            return gptq
        reason = _gptq_agree(gptq)
        return reason if reason is not None else GptqMatch(gptq)
    if isinstance(group := _group(op), NoMatch):
        return group
    layout = _matmul_layout(group)
    return layout if isinstance(layout, NoMatch) else MatmulMatch(group, layout)


def _group(op: ProjT) -> list[ProjT] | NoMatch:
    x = op.operands[0]
    group = sorted((u for u in users(x) if isinstance(u, type(op)) and u.operands[0] is x), key=block_index)
    if len(group) == 1:
        return NotCandidate(f"the only {op.name} user of its input")
    if len(group) != 3:
        return no_match(f"input has {len(group)} {op.name} users, expected 3 (q, k, v)")
    if group[-1] is not op:
        return NotCandidate("not the last of the 3 projections of its input (matched there)")
    last = block_index(op)
    for i, proj in enumerate(group[:-1]):
        if any(block_index(u) < last for u in users(proj.results[0])):
            return no_match(f"projection {i} is used before the last projection")
    return group


def _matmul_layout(group: list[MatmulOp]) -> bool | NoMatch:
    """True: weights are `W.T` permutes of `[N, K]`; False: plain `[K, N]`."""
    permutes = [m.rhs.owner if isinstance(m.rhs.owner, PermuteOp) else None for m in group]
    if len({p is None for p in permutes}) != 1:
        return no_match("projections disagree on the weight layout (W.T vs W)")
    for i, (m, permute) in enumerate(zip(group, permutes, strict=True)):
        if tensor_type(m.rhs).rank != 2:
            return no_match(f"projection {i} has a batched rhs")
        if permute is not None and list(permute.permutation) != [1, 0]:
            return no_match(f"projection {i} weight permute is not [1, 0]")
    return permutes[0] is not None


def _gptq_agree(group: list[QMatmulGptqOp]) -> NoMatch | None:
    first, want = group[0], group[0].params
    for i, op in enumerate(group[1:], start=1):
        for field, value in op.params.items():
            if value != want[field]:
                return no_match(f"projection {i} {field} {value} != {want[field]}")
        if (op.qzeros is None) != (first.qzeros is None):
            return no_match(f"projection {i} qzeros presence differs")
        if op.g_idx is not first.g_idx:
            return no_match(
                f"projection {i} g_idx is a different value ({_name(op.g_idx)} vs {_name(first.g_idx)}): "
                "act-order projections stack only when they read one g_idx (GPTQAttentionWithRope "
                "shares q's when the loaded tensors are equal)"
            )
        if tensor_type(op.scales).dtype != tensor_type(first.scales).dtype:
            return no_match(f"projection {i} scales dtype differs")
    return None


def _name(value: SSAValue | None) -> str:
    """A g_idx operand as the weight it is bound from (or what produced it)."""
    if value is None:
        return "absent"
    owner = value.owner
    return owner.weight_name if isinstance(owner, WeightOp) else getattr(owner, "name", "a block argument")
