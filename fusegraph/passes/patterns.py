"""Shared matching helpers for fusegraph's rewrite patterns.

A pattern here is *guard-first*: `match(op)` looks at the IR without a rewriter (so it
cannot mutate anything) and returns either a match object or a `NoMatch` reason;
`rewrite(match, rewriter)` then mutates. Reasons go to the active `PassReport`, which the
PassManager prints in debug mode and collects in its statistics.

Example:
    >>> class FoldCast(GuardedPattern[CastOp]):
    ...     anchor = CastOp
    ...     def match(self, op):
    ...         if op.input.type != op.result.type:
    ...             return no_match("cast changes the dtype")
    ...         return op
    ...     def rewrite(self, op, rewriter):
    ...         rewriter.replace(op, [], [op.input])
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TextIO, TypeVar

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)

LOG = logging.getLogger("fusegraph.passes")

M = TypeVar("M")
OpT = TypeVar("OpT", bound=Operation)


class NoMatch(str):
    """Why a pattern did not match, e.g. `NoMatch("split result 1 has 2 users")`."""

    __slots__ = ()


class NotCandidate(NoMatch):
    """A no-match for an op that is not a candidate at all (not reported, not "skipped")."""

    __slots__ = ()


def no_match(reason: str) -> NoMatch:
    """A no-match carrying `reason` (return it from a guard)."""
    return NoMatch(reason)


# --- reports --------------------------------------------------------------------------
@dataclass
class PassReport:
    """What one pass run did: named counters and the reasons its patterns refused.

    Attributes:
        pass_name: the pass's kebab-case name.
        counters: e.g. `{"fused": 32, "skipped": 0}`, in declaration order.
        reasons: one line per (candidate, reason), in the order they happened.
        debug_stream: where reasons are echoed as they happen (None: only collected).
    """

    pass_name: str
    counters: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    debug_stream: TextIO | None = None
    _refused: dict[Operation, str] = field(default_factory=dict, repr=False)
    _seen: set[tuple[int, str]] = field(default_factory=set, repr=False)

    def declare(self, *names: str) -> None:
        """Make counters show up (as 0) even when nothing happens."""
        for name in names:
            self.counters.setdefault(name, 0)

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        self.counters[name] = self.counters.get(name, 0) + n

    def refuse(self, candidate: Operation, reason: str) -> None:
        """Record that a pattern refused `candidate` because of `reason` (once per pair)."""
        self._refused[candidate] = reason
        if (id(candidate), reason) in self._seen:
            return
        self._seen.add((id(candidate), reason))
        line = f"{self.pass_name}: {describe(candidate)}: {reason}"
        self.reasons.append(line)
        LOG.debug(line)
        if self.debug_stream is not None:
            print(line, file=self.debug_stream)

    def accept(self, candidate: Operation) -> None:
        """A candidate refused earlier matched after all (the walker revisits ops)."""
        self._refused.pop(candidate, None)

    @property
    def refused(self) -> int:
        """How many distinct candidates were refused, never matched, and are still in the IR."""
        return sum(1 for op in self._refused if op.parent is not None)


_ACTIVE: contextvars.ContextVar[PassReport | None] = contextvars.ContextVar("fg_pass_report", default=None)


def current_report(pass_name: str) -> PassReport:
    """The report the PassManager opened for this pass, or a detached one.

    Passes also run under plain xDSL (`PassPipeline`, `xdsl-opt`), where nobody collects.
    """
    active = _ACTIVE.get()
    return active if active is not None else PassReport(pass_name)


@contextlib.contextmanager
def reporting(report: PassReport) -> Iterator[PassReport]:
    """Make `report` the active one while a pass runs."""
    token = _ACTIVE.set(report)
    try:
        yield report
    finally:
        _ACTIVE.reset(token)


def describe(op: Operation) -> str:
    """`fg.kv_cache.store #57 (layer 3)`: the op's name and position in its block."""
    where = ""
    if (block := op.parent_block()) is not None:
        where = f" #{next(i for i, o in enumerate(block.ops) if o is op)}"
    layer = getattr(op, "layer_idx", None)
    return f"{op.name}{where}" + (f" (layer {layer})" if isinstance(layer, int) else "")


# --- guarded patterns -----------------------------------------------------------------
class GuardedPattern(RewritePattern, Generic[M]):
    """A pattern split into a pure `match` and a mutating `rewrite`.

    Subclasses set `anchor` (the op class visited) and `counter` (the statistic bumped per
    rewrite), and implement `match` and `rewrite`.
    """

    anchor: ClassVar[type[Operation]]
    counter: ClassVar[str] = "rewritten"
    report_refusals: ClassVar[bool] = True
    label: str = ""  # prefixes refusal reasons, e.g. the canonicalization rule's name

    def __init__(self, report: PassReport) -> None:
        self.report = report

    @abstractmethod
    def match(self, op: Any) -> M | NoMatch:
        """Look, do not touch: a match object, or `no_match(reason)`."""

    @abstractmethod
    def rewrite(self, match: M, rewriter: PatternRewriter) -> None:
        """Apply a match found by `match`."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        if not isinstance(op, self.anchor):
            return
        found = self.match(op)
        if isinstance(found, NoMatch):
            if self.report_refusals and not isinstance(found, NotCandidate):
                self.report.refuse(op, f"{self.label}: {found}" if self.label else found)
            return
        self.rewrite(found, rewriter)
        self.report.accept(op)
        self.report.count(self.counter)


def apply_patterns(module: ModuleOp, patterns: Sequence[RewritePattern], *, reverse: bool = False) -> bool:
    """Walk `module` with xDSL's PatternRewriteWalker until no pattern applies."""
    # dce_enabled=False: a rewrite pass changes what it matched and nothing else; dead code
    # is the `dce` pass's job, so `-p fuse-...` output shows exactly what the pass did.
    applier = GreedyRewritePatternApplier(list(patterns), dce_enabled=False)
    walker = PatternRewriteWalker(applier, apply_recursively=True, walk_reverse=reverse)
    return walker.rewrite_module(module)


# --- guards ---------------------------------------------------------------------------
def num_uses(value: SSAValue) -> int:
    """How many operands use `value` (an op using it twice counts twice)."""
    return sum(1 for _ in value.uses)


def users(value: SSAValue) -> list[Operation]:
    """The distinct ops using `value`, in use-list order."""
    seen: dict[int, Operation] = {}
    for use in value.uses:
        seen.setdefault(id(use.operation), use.operation)
    return list(seen.values())


def single_user(value: SSAValue, what: str) -> Operation | NoMatch:
    """The one op using `value`, or `<what> has N users`."""
    if (n := num_uses(value)) != 1:
        return no_match(f"{what} has {n} users")
    user: Operation = next(iter(value.uses)).operation
    return user


def defined_by(value: SSAValue, op_cls: type[OpT], what: str) -> OpT | NoMatch:
    """The op of class `op_cls` that produces `value`, or why not."""
    owner = value.owner
    if not isinstance(owner, Operation):
        return no_match(f"{what} is a graph input, not produced by {op_cls.name}")
    if not isinstance(owner, op_cls):
        return no_match(f"{what} is produced by {owner.name}, not {op_cls.name}")
    return owner


def block_index(op: Operation) -> int:
    """The position of `op` in its block (for ordering guards)."""
    block = op.parent_block()
    if block is None:
        raise ValueError(f"{op.name} is not in a block")
    return next(i for i, o in enumerate(block.ops) if o is op)
