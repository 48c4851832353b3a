"""`fuse-silu-mul`: `fg.mul(fg.silu(gate), up)`  ==>  `fg.silu_mul` (one kernel on CUDA instead of two).

Before:  %a, %b = fg.split %gu {axis = 1}    %s = fg.silu %a    %y = fg.mul %s, %b
After:   %y = fg.silu_mul %gu                       (stacked gate_up: the halves read in place)
Before:  %s = fg.silu %gate    %y = fg.mul %s, %up
After:   %y = fg.silu_mul %gate, %up

The stacked form needs a split of one tensor into two equal halves along its last axis, gate
first, whose halves nobody else reads; otherwise the two-operand form is used (the split stays
for its other users). Refused (the reason in debug mode): a silu with other users (its result is
needed anyway), gate and up of different types (the mul would broadcast). A mul without a silu
operand is not a candidate. The op's math rounds as the unfused ops do (`ops/silu_mul.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from fusegraph.compiler.types import tensor_type
from fusegraph.ops.elementwise import MulOp, SiluOp
from fusegraph.ops.shape import SplitOp
from fusegraph.ops.silu_mul import SiluMulOp
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    NotCandidate,
    apply_patterns,
    current_report,
    no_match,
    num_uses,
)


@dataclass
class _Match:
    mul: MulOp
    silu: SiluOp
    up: SSAValue
    split: SplitOp | None  # the stacked form: gate, up are this split's two halves


class FuseSiluMulPattern(GuardedPattern[_Match]):
    """fg.mul(fg.silu(gate), up) -> fg.silu_mul gate, up (or fg.silu_mul gate_up)"""

    anchor = MulOp
    counter = "fused"

    def match(self, op: MulOp) -> _Match | NoMatch:
        silu_first = isinstance(op.lhs.owner, SiluOp)
        silu_value, up = (op.lhs, op.rhs) if silu_first else (op.rhs, op.lhs)
        if not isinstance(silu := silu_value.owner, SiluOp):
            return NotCandidate("no operand of the mul is an fg.silu")
        if (n := num_uses(silu.result)) != 1:
            return no_match(f"the fg.silu has {n} users (its result is needed anyway)")
        gate = silu.input
        if tensor_type(gate) != tensor_type(up):
            return no_match("gate and up differ in type (the mul broadcasts)")
        return _Match(op, silu, up, _stacked_split(gate, up))

    def rewrite(self, match: _Match, rewriter: PatternRewriter) -> None:
        split = match.split
        fused = SiluMulOp(split.input) if split is not None else SiluMulOp(match.silu.input, match.up)
        rewriter.insert(fused, InsertPoint.before(match.mul))
        rewriter.replace_all_uses_with(match.mul.result, fused.result)
        rewriter.erase(match.mul)
        rewriter.erase(match.silu)
        if split is not None:
            self.report.count("stacked")
            rewriter.erase(split)


def _stacked_split(gate: SSAValue, up: SSAValue) -> SplitOp | None:
    """The split whose halves are exactly (gate, up), read only by the silu and the mul, else None."""
    split = gate.owner
    if not isinstance(split, SplitOp) or up.owner is not split or len(split.outputs) != 2:
        return None
    axis_is_last = split.axis.value.data == tensor_type(split.input).rank - 1
    in_order = split.outputs[0] is gate and split.outputs[1] is up
    if not (axis_is_last and in_order and tensor_type(split.input).shape[-1].is_static):
        return None
    return split if all(num_uses(r) == 1 for r in split.outputs) else None


@dataclass(frozen=True)
class FuseSiluMul(ModulePass):
    """fg.mul(fg.silu(gate), up) ==> fg.silu_mul (the stacked gate_up's split folded in)"""

    name = "fuse-silu-mul"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("fused", "stacked", "skipped")
        apply_patterns(op, [FuseSiluMulPattern(report)])
