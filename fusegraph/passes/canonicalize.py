"""`canonicalize`: local folds, written as a table of rules (tinygrad style).

Before:
    %1 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    %2 = fg.reshape %1 : !fg.tensor<[T, 4, 16], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %3 = fg.cast %2 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    func.return %3
After:
    func.return %0

Each rule is `(name, anchor op class, fold)`. A fold looks at one op and returns either
`(new_ops, replacement values)` or a `NoMatch` reason; it never mutates, and builds new
ops with their constructors (`ReshapeOp(x, shape=...)`). Ops left dead by a fold are erased
by the dce pattern afterwards (a buffer write never is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter

from fusegraph.compiler.errors import IRVerifyError
from fusegraph.compiler.structure import first_problem
from fusegraph.compiler.types import tensor_type
from fusegraph.ops.elementwise import CastOp
from fusegraph.ops.shape import ConcatOp, PermuteOp, ReshapeOp, SplitOp
from fusegraph.passes.dce import EraseDeadOp
from fusegraph.passes.patterns import (
    GuardedPattern,
    NoMatch,
    PassReport,
    apply_patterns,
    current_report,
    no_match,
)

Fold = tuple[list[Operation], list[SSAValue]]


def _identity(op: ReshapeOp | CastOp) -> Fold | NoMatch:
    if op.input.type != op.result.type:
        return no_match(f"{op.name} changes the type")
    return [], [op.input]


def _reshape_reshape(op: ReshapeOp) -> Fold | NoMatch:
    inner = op.input.owner
    if not isinstance(inner, ReshapeOp):
        return no_match("input is not produced by fg.reshape")
    return [new := ReshapeOp(inner.input, shape=op.result.type.shape)], [new.result]


def _permute_permute(op: PermuteOp) -> Fold | NoMatch:
    inner = op.input.owner
    if not isinstance(inner, PermuteOp):
        return no_match("input is not produced by fg.permute")
    # result dim i = inner result dim perm[i] = x dim inner_perm[perm[i]]
    new = PermuteOp(inner.input, perm=[inner.permutation[p] for p in op.permutation])
    return [new], [new.result]


def _permute_identity(op: PermuteOp) -> Fold | NoMatch:
    if list(op.permutation) != list(range(len(op.permutation))):
        return no_match(f"perm {list(op.permutation)} is not the identity")
    return [], [op.input]


def _split_concat(op: SplitOp) -> Fold | NoMatch:
    concat = op.input.owner
    if not isinstance(concat, ConcatOp):
        return no_match("input is not produced by fg.concat")
    rank = tensor_type(op.input).rank
    if concat.axis.value.data % rank != op.axis.value.data % rank:
        return no_match(f"split axis {op.axis.value.data} != concat axis {concat.axis.value.data}")
    pieces = list(concat.inputs)
    if [p.type for p in pieces] != [r.type for r in op.outputs]:
        return no_match("split pieces do not match the concat inputs")
    return [], pieces


def _concat_split(op: ConcatOp) -> Fold | NoMatch:
    first = op.inputs[0].owner
    if not isinstance(first, SplitOp):
        return no_match("input 0 is not produced by fg.split")
    rank = tensor_type(first.input).rank
    if first.axis.value.data % rank != op.axis.value.data % rank:
        return no_match(f"concat axis {op.axis.value.data} != split axis {first.axis.value.data}")
    if list(op.inputs) != list(first.outputs):
        return no_match("inputs are not all the split's results, in order")
    return [], [first.input]


@dataclass(frozen=True)
class Rule:
    """One canonicalization: `fold` applied to every `anchor` op."""

    name: str
    anchor: type[Operation]
    fold: Callable[[Any], Fold | NoMatch]


RULES: tuple[Rule, ...] = (
    # reshape(x : T -> T) -> x
    Rule("reshape-identity", ReshapeOp, _identity),
    # reshape(reshape(x)) -> reshape(x)
    Rule("reshape-reshape", ReshapeOp, _reshape_reshape),
    # cast(x : dtype -> dtype) -> x
    Rule("cast-same-dtype", CastOp, _identity),
    # permute(permute(x, p), q) -> permute(x, p[q])
    Rule("permute-permute", PermuteOp, _permute_permute),
    # permute(x, [0, 1, ..]) -> x
    Rule("permute-identity", PermuteOp, _permute_identity),
    # split(concat(a, b, c)) -> a, b, c      when the pieces are exactly the inputs
    Rule("split-concat", SplitOp, _split_concat),
    # concat(split(x)) -> x                  when all pieces come back in order
    Rule("concat-split", ConcatOp, _concat_split),
)


class RulePattern(GuardedPattern[tuple[Operation, Fold]]):
    """Applies one `Rule`; its counter is the rule's name."""

    def __init__(self, rule: Rule, report: PassReport) -> None:
        super().__init__(report)
        self.rule = rule
        self.anchor = rule.anchor  # type: ignore[misc]
        self.counter = rule.name  # type: ignore[misc]
        self.label = rule.name

    def match(self, op: Operation) -> tuple[Operation, Fold] | NoMatch:
        found = self.rule.fold(op)
        return found if isinstance(found, NoMatch) else (op, found)

    def rewrite(self, match: tuple[Operation, Fold], rewriter: PatternRewriter) -> None:
        op, (new_ops, values) = match
        rewriter.replace(op, new_ops, values)


@dataclass(frozen=True)
class Canonicalize(ModulePass):
    """Apply `RULES` until none applies, then erase what they left dead."""

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        # The folds chase `op.input.owner`: on an op that uses its own result (which xDSL's
        # graph regions allow) they would rewrite forever. Refuse such a module up front.
        if (problem := first_problem(op)) is not None:
            raise IRVerifyError(f"canonicalize: the module is not a well-formed graph: {problem.message}")
        report = current_report(self.name)
        report.declare(*(r.name for r in RULES))
        patterns = [RulePattern(rule, report) for rule in RULES]
        apply_patterns(op, [*patterns, EraseDeadOp(report)])
        report.counters.pop("erased", None)
