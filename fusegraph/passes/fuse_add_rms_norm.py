"""`fuse-add-rms-norm`: a residual `fg.add` and the `fg.rms_norm` of its sum  ==>  `fg.add_rms_norm`.

Before:  %h = fg.add %x, %attn    ...    %y = fg.rms_norm %h, %w [perm %p]    ...    %o = fg.add %h, %mlp
After:   %h2, %y2 = fg.add_rms_norm %x, %attn, %w [perm %p]                 ...    %o = fg.add %h2, %mlp

One kernel on CUDA reads x and attn once and writes the sum (the residual stream, which keeps its
other users) and the normed rows (vLLM's fused_add_rms_norm); a decoder has two a layer. The
fused op sits where the norm was, so every other reader of the sum must come after the norm;
a reader before it that is itself unused (a norm `fold-act-order-permutation` replaced by its
permuted copy, not yet removed by `dce`) is erased with it. One norm per add is fused (a second
norm of the same sum reads the fused op's sum). Refused, with the reason in debug mode: an add
that broadcasts (its operands differ in type from the sum), a sum read before the norm.
The results are bitwise those of the two ops (`ops/add_rms_norm.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint
from xdsl.traits import Pure

from fusegraph.compiler.types import tensor_type
from fusegraph.ops.add_rms_norm import AddRmsNormOp
from fusegraph.ops.elementwise import AddOp
from fusegraph.ops.norm import RmsNormOp
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    NotCandidate,
    apply_patterns,
    block_index,
    current_report,
    no_match,
    num_uses,
    users,
)


@dataclass
class _Match:
    norm: RmsNormOp
    add: AddOp
    dead: list[Operation]  # unused pure readers of the sum before the norm


class FuseAddRmsNormPattern(GuardedPattern[_Match]):
    """fg.rms_norm(fg.add(a, b)) -> fg.add_rms_norm a, b (the sum stays for its other users)"""

    anchor = RmsNormOp
    counter = "fused"

    def match(self, op: RmsNormOp) -> _Match | NoMatch:
        if not isinstance(add := op.input.owner, AddOp):
            return NotCandidate("the norm's input is not an fg.add")
        if num_uses(op.result) == 0:
            return NotCandidate("the norm's result is unused (dce removes it)")
        t = tensor_type(add.result)
        if tensor_type(add.lhs) != t or tensor_type(add.rhs) != t:
            return no_match("the add broadcasts (its operands differ in type from the sum)")
        at, dead = block_index(op), []
        for user in users(add.result):
            if user is op or block_index(user) > at:
                continue
            if not (user.has_trait(Pure) and all(num_uses(r) == 0 for r in user.results)):
                return no_match(f"the sum is read before the norm (by {user.name})")
            dead.append(user)
        return _Match(op, add, dead)

    def rewrite(self, match: _Match, rewriter: PatternRewriter) -> None:
        norm, add = match.norm, match.add
        fused = AddRmsNormOp(add.lhs, add.rhs, norm.weight, norm.perm, eps=norm.eps.value.data)
        rewriter.insert(fused, InsertPoint.before(norm))
        for op in match.dead:
            rewriter.erase(op)
        rewriter.replace_all_uses_with(norm.result, fused.result)
        rewriter.erase(norm)
        rewriter.replace_all_uses_with(add.result, fused.residual)
        rewriter.erase(add)
        if match.dead:
            self.report.count("dead_erased", len(match.dead))
        if norm.perm is not None:
            self.report.count("with_perm")


@dataclass(frozen=True)
class FuseAddRmsNorm(ModulePass):
    """fg.add + fg.rms_norm of its sum ==> fg.add_rms_norm (residual stream and normed rows, one kernel)"""

    name = "fuse-add-rms-norm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = current_report(self.name)
        report.declare("fused", "with_perm", "dead_erased", "skipped")
        apply_patterns(op, [FuseAddRmsNormPattern(report)])
